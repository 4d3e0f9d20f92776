"""The trial loop of one process, and the rules that let many processes share a study.

``run_plan(plan)`` is what every process of a search runs: the main process of
``lora-search run`` and each worker process of ``run --workers N`` (which gets only the
picklable ``SearchPlan``). Any number of such processes, on one host or many, may share
a study through its storage; these rules keep them consistent:

- **Exactly the target.** A trial counts towards ``--trials`` once it is finished
  (complete, pruned or infeasible); failed trials do not. A process starts a trial only
  while finished + running < target, and waits (rather than quits) while the running
  trials of others could still fail and leave room. Two processes may still both start
  a trial in the same instant; the later-numbered one then sees it is one too many
  (``TrialGate.admit``), waits for room, and ends as a failed trial marked ``surplus``
  if none appears, before it trains anything. ``TrialGate`` alone decides whether this
  process may start another trial (target, deadline, failures in a row).
- **Dead workers.** A trial whose process died (SIGKILL, OOM killer, lost host) is
  failed and re-queued with the same parameters: on relational storages by Optuna's
  heartbeats (another host notices within the grace period), on this host at once by
  checking the process id recorded on the trial (this is what covers the journal file,
  which has no heartbeats).
- **Interrupts.** The running trial of an interrupted process (Ctrl-C, or SIGTERM made
  one) ends as failed with user attr ``interrupted`` and is re-queued, so the next run
  resumes it.

Each trial records where it ran: user attrs ``worker.host``, ``worker.id``,
``worker.pid`` and ``worker.device``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ._errors import SearchError
from ._study import trained_config

if TYPE_CHECKING:
    import optuna

    from ._trials import TrialCounts
    from .objectives import LoraObjective
    from .spaces import ResolvedSpace

# Environment of a worker process started by ``run --workers N``.
ENV_WORKER_ID = "LORA_SEARCH_WORKER_ID"
ENV_DEVICE = "LORA_SEARCH_DEVICE"

ATTR_HOST = "worker.host"
ATTR_WORKER = "worker.id"
ATTR_PID = "worker.pid"
ATTR_DEVICE = "worker.device"
ATTR_INTERRUPTED = "interrupted"
ATTR_SURPLUS = "surplus"

# Seconds between looks at the storage while waiting for room or for workers.
POLL_SECONDS = 1.0

# A running trial that names no process this long after it started was drawn by a process
# killed inside Optuna's ask() (SIGKILL, the OOM killer, a lost machine): it has no pid and
# no heartbeat to go by. Drawing takes seconds even for TPE on a long study over a remote
# database; the margin also covers clocks of other hosts that disagree by a few minutes.
UNCLAIMED_GRACE_SECONDS = 600

# Polls of waiting for room before saying what the wait is for.
WAIT_NOTE_POLLS = 10


def _running_text(running: list[Any]) -> str:
    """'trial 3 (pid 812 on gpu-box)', 'trial 4 (no process recorded)', ... for a wait's note."""
    def owner(trial: Any) -> str:
        pid = trial.user_attrs.get(ATTR_PID)
        return f"pid {pid} on {trial.user_attrs.get(ATTR_HOST)}" if pid is not None else "no process recorded"

    return ", ".join(f"trial {trial.number} ({owner(trial)})" for trial in running)


# A trial that raises is recorded as failed (the objective records the error as the
# trial's user attr "error" and leaves the process clean for the next trial) and the
# search goes on; this many failures in a row mean something is broken, so it stops.
MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True)
class SearchPlan:
    """Everything one process needs to run trials of a prepared study (picklable)."""

    study_name: str
    storage: str | None
    space: str  # a built-in scenario's name, or the label of the space file's text
    space_yaml: str | None  # the space file's text (None: a built-in scenario)
    profile: dict[str, Any]
    workload: dict[str, Any]
    direction: str  # "minimize" | "maximize"
    sampler: str
    pruner: str
    sampler_seed: int
    target: int
    deadline: float | None  # time.time() after which no trial starts
    tracking: dict[str, Any] | None = None  # the fields of the trials' objectives.Tracking (None: no tracker)

    def open_study(self, min_resource: int = 1) -> optuna.Study:
        import optuna

        from ._samplers import make_pruner, make_sampler
        from ._storage import open_storage

        return optuna.load_study(
            study_name=self.study_name,
            storage=open_storage(self.storage),
            sampler=make_sampler(self.sampler, self.sampler_seed),
            pruner=make_pruner(self.pruner, self.direction, min_resource),
        )


def this_worker(default_device: str = "cpu") -> dict[str, Any]:
    """The user attrs naming this process: host, worker id, pid and device."""
    return {
        ATTR_HOST: socket.gethostname(),
        ATTR_WORKER: int(os.environ.get(ENV_WORKER_ID, "0")),
        ATTR_PID: os.getpid(),
        ATTR_DEVICE: os.environ.get(ENV_DEVICE, default_device),
    }


# --- trials that never got to finish ---------------------------------------------------


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a copy of a trial that never got to finish (same params, retry history kept),
    the same way Optuna's heartbeat retry does, at most MAX_RETRIES times per trial."""
    import optuna

    from ._storage import MAX_RETRIES

    # the copy leaves out what belonged to the failed run: where it ran, why it failed
    clone = copy.deepcopy(trial)
    clone.user_attrs = {k: v for k, v in trial.user_attrs.items() if not k.startswith("worker.") and k != ATTR_INTERRUPTED}
    clone.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != "fail_reason"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, clone)


def reclaim_dead_trials(study: optuna.Study, *, this_process_idle: bool = False) -> list[int]:
    """Fail and re-queue the running trials whose process is gone; returns their numbers.

    Heartbeats cover any host on relational storages; the recorded pid covers this host
    on every storage (and immediately, without waiting for the grace period); a trial
    that names no process at all is reclaimed UNCLAIMED_GRACE_SECONDS after its start.
    ``this_process_idle``: this process runs no trial now, so one still running under its
    pid was left by an earlier search in it that ended on an error (the Python API, a test).
    """
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        optuna.storages.fail_stale_trials(study)
    reclaimed = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number not in before]
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get(ATTR_PID)
        if pid is None:
            started = trial.datetime_start
            if started is None or (datetime.datetime.now() - started).total_seconds() < UNCLAIMED_GRACE_SECONDS:
                continue
            why = f"no process claimed it within {UNCLAIMED_GRACE_SECONDS // 60} minutes (killed while drawing it)"
        elif trial.user_attrs.get(ATTR_HOST) != host:
            continue
        elif pid == os.getpid():
            if not this_process_idle:
                continue
            why = "an earlier search in this process ended on an error with it unfinished"
        elif _process_alive(int(pid)):
            continue
        else:
            why = f"worker process {pid} died"
        try:
            study._storage.set_trial_system_attr(trial._trial_id, "fail_reason", why)
            failed = study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process was quicker
        if failed:
            requeue(study, study._storage.get_trial(trial._trial_id))
            reclaimed.append(trial.number)
    return reclaimed


def mark_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record that the running trial was interrupted and queue it for the next run."""
    import optuna

    # held: a worker gets the terminal's Ctrl-C and then the SIGTERM its parent forwards, and
    # the second, cutting this in two, lost the trial (failed, never re-queued)
    with interrupts_held():
        trial.set_user_attr(ATTR_INTERRUPTED, True)
        study._storage.set_trial_system_attr(trial._trial_id, "fail_reason", "interrupted (Ctrl-C or SIGTERM)")
        requeue(study, study._storage.get_trial(trial._trial_id))
    # the run ends now and the trial is recorded: Optuna's traceback of the interrupt
    # ("Trial N failed ... KeyboardInterrupt") would only bury the one-line message
    optuna.logging.set_verbosity(optuna.logging.ERROR)


# --- may this process start another trial? ------------------------------------------------


class SurplusTrial(RuntimeError):
    """This trial started when the target was already taken by other running trials."""


class _QuietSurplus(logging.Filter):
    """Drops Optuna's two warnings on a surplus trial, the first with a traceback: it fails on
    purpose before training, and its progress line already says so in one line."""

    def __init__(self) -> None:
        super().__init__()
        self.surplus: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SurplusTrial):
            self.surplus.add(int(record.getMessage().split()[1]))  # "Trial 8 failed with parameters: ..."
            return False
        words = record.getMessage().split()
        return not (words[:1] == ["Trial"] and words[2:5] == ["failed", "with", "value"] and int(words[1]) in self.surplus)


_QUIET_SURPLUS = _QuietSurplus()


# Set by the launcher's SIGTERM handler, which also raises KeyboardInterrupt. Python
# swallows an exception raised while a __del__ runs ("Exception ignored in ..."), so the
# loops look here as well: a stop asked for is never lost, at worst it waits for a check.
TERMINATION_REQUESTED = threading.Event()


def raise_if_terminated() -> None:
    """KeyboardInterrupt, once, when a SIGTERM arrived whose own interrupt was swallowed."""
    if TERMINATION_REQUESTED.is_set():
        TERMINATION_REQUESTED.clear()
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait for the end of the block, then act as they would have; the
    same signal a second time acts at once (a storage that hangs must not make Ctrl-C useless).

    For the few steps that must not be cut in two: starting a worker (an interrupt inside
    ``Popen`` leaves through its clean-up, which neither returns nor ends the child) and
    drawing a trial (Optuna stores it as running before the objective can mark it
    interrupted). Only Python's handlers change: a child inherits no blocked signal mask."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python interrupts the main thread alone: nothing can cut this block (and only it may set handlers)
        return
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if signum in held:  # asked again: the previous handler acts now
            held.remove(signum)
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        else:
            held.append(signum)

    # an ignored one stays so: a child inherits SIG_IGN, where a Python handler resets to default
    stops = [stop for stop in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(stop) is not signal.SIG_IGN]
    previous = {stop: signal.signal(stop, hold) for stop in stops}
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
        for stop in held:  # in the order they came
            signal.raise_signal(stop)


@dataclass
class TrialGate:
    """Whether this process may start another trial of the study: the target, the
    deadline and the failures in a row, applied in one place (rules: module docstring).

    ``should_stop`` answers before a trial is asked for, ``admit`` first thing inside
    one; as an Optuna callback the gate stops ``study.optimize`` when ``should_stop`` does.
    """

    target: int
    deadline: float | None  # time.time() after which no trial starts
    default_device: str = "cpu"  # recorded on trials of a process that no launcher gave a device
    sleep: Callable[[float], None] = time.sleep
    reason: str = "target"  # why should_stop last said stop: "target", "timeout" or "failures"
    consecutive_failures: int = 0
    last_failure: str = ""

    def should_stop(self, study: optuna.Study) -> bool:
        raise_if_terminated()
        reclaim_dead_trials(study)
        counts, room = self._wait(study, None)
        if counts.finished >= self.target:
            self.reason = "target"
        elif not room or self._past_deadline():  # not room: waited until the deadline
            self.reason = "timeout"
        elif self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self.reason = "failures"
        else:
            return False
        return True

    def admit(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Call first thing in the objective: makes sure the trial is not one too many
        (raises SurplusTrial, before any training, if it is)."""
        raise_if_terminated()  # a stop asked for while this trial was being drawn: no training starts
        if self._wait(study, trial.number)[1]:
            return
        trial.set_user_attr(ATTR_SURPLUS, True)
        study._storage.set_trial_system_attr(
            trial._trial_id, "fail_reason", "surplus: other workers had already started the last trials"
        )
        raise SurplusTrial(f"trial {trial.number} is surplus: the target of {self.target} was already taken")

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.FAIL:
            self.consecutive_failures += 1
            self.last_failure = str(trial.user_attrs.get("error") or trial.system_attrs.get("fail_reason", ""))
        else:
            self.consecutive_failures = 0
        if self.should_stop(study):
            study.stop()

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def _wait(self, study: optuna.Study, number: int | None) -> tuple[TrialCounts, bool]:
        """The study's counts and whether trial ``number`` (None: one not started yet) fits
        in the target beside the running trials numbered before it. While it does not,
        waits for one of those to fail and leave room, unless the study is done or the
        deadline has passed."""
        from optuna.trial import TrialState

        from ._trials import count_states

        polls = 0
        while True:
            trials = study.get_trials(deepcopy=False)
            counts = count_states(trials)
            running = [t for t in trials if t.state == TrialState.RUNNING and (number is None or t.number < number)]
            room = counts.finished + len(running) < self.target
            if room or counts.finished >= self.target or self._past_deadline():
                return counts, room
            if polls == WAIT_NOTE_POLLS:  # not a word for the usual few seconds; then what it waits for, once
                print(f"waiting: {_running_text(running)} could still fail and leave room under the target of "
                      f"{self.target}; a trial no process claims is reclaimed {UNCLAIMED_GRACE_SECONDS // 60} minutes "
                      "after it started", file=sys.stderr)
            polls += 1
            self.sleep(POLL_SECONDS)
            reclaim_dead_trials(study)


# --- the loop ---------------------------------------------------------------------------


def run_trials(study: optuna.Study, objective: LoraObjective, resolved: ResolvedSpace, gate: TrialGate,
               callbacks: Sequence[Callable[..., None]] = ()) -> str:
    """Run trials of the study in this process until the gate stops them; returns why:
    "target", "timeout" or "interrupted" (SearchError after too many failures in a row)."""
    from optuna.trial import TrialState

    reclaim_dead_trials(study, this_process_idle=True)
    if gate.should_stop(study):
        return gate.reason

    def one_trial(trial: optuna.Trial) -> float:
        try:
            gate.admit(study, trial)
            return objective(trial, trained_config(trial, resolved.sample(trial)))
        except KeyboardInterrupt:
            mark_interrupted(study, trial)
            raise

    draw = study.ask

    def draw_owned(*args: Any, **kwargs: Any) -> optuna.Trial:
        # Optuna's ask() stores the trial as running, then samples (which can take a while),
        # all before one_trial runs: a stop landing there would leave the trial running with
        # no owner. Held until the trial names its process, the stop then ends it here.
        trial = None
        try:
            with interrupts_held():
                trial = draw(*args, **kwargs)
                for key, value in this_worker(gate.default_device).items():
                    trial.set_user_attr(key, value)
        except KeyboardInterrupt:
            if trial is not None:
                with interrupts_held():
                    mark_interrupted(study, trial)
                    study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            raise
        except Exception as error:  # the storage failed mid-draw (a full disk, a lost connection)
            if trial is not None:
                with contextlib.suppress(Exception):  # the storage may refuse this too: the next run reclaims it
                    study._storage.set_trial_system_attr(trial._trial_id, "fail_reason", f"drawing it failed: {error}")
                    study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
                    requeue(study, study._storage.get_trial(trial._trial_id))
            raise
        return trial

    # The model, tokenizer and data live as long as the process: freezing them keeps every
    # trial's full collections (the objective's, accelerate's) from walking them again
    # (0.4-0.5 s per collection before, 0.012 s after: benchmarks/README.md, overhead).
    gc.collect()
    gc.freeze()
    logging.getLogger("optuna.study._optimize").addFilter(_QUIET_SURPLUS)  # once: a filter already there is not added again
    study.ask = draw_owned  # what Optuna's optimize calls for each trial; no other hook comes before the objective
    try:
        study.optimize(one_trial, catch=(Exception,), callbacks=[*callbacks, gate])
    except KeyboardInterrupt:
        return "interrupted"
    finally:
        del study.ask
    if gate.reason == "failures":
        raise SearchError(
            f"{MAX_CONSECUTIVE_FAILURES} trials in a row failed (last: {gate.last_failure or 'no reason recorded'}); "
            f"see 'lora-search show {study.study_name}'"
        )
    return gate.reason


def run_plan(plan: SearchPlan, *, objective: LoraObjective | None = None, resolved: ResolvedSpace | None = None,
             callbacks: Sequence[Callable[..., None]] = ()) -> str:
    """``run_trials`` on the plan's study; ``objective`` and ``resolved`` are reused when the
    caller already has them (the main process), a worker process builds its own."""
    import optuna

    from .objectives import LoraObjective, Tracking, Workload, quiet_libraries
    from .spaces import RunProfile, load_space

    if objective is None:
        quiet_libraries()
        objective = LoraObjective(Workload.from_dict(plan.workload), Tracking(**plan.tracking) if plan.tracking else None,
                                  config_devices=plan.profile["devices"])
    if resolved is None:
        resolved = load_space(plan.space, plan.space_yaml).resolve(RunProfile(**plan.profile))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = plan.open_study(min_resource=objective.report_steps(resolved.baseline())[0])
    gate = TrialGate(plan.target, plan.deadline, default_device="cuda:0" if plan.profile.get("accelerator") == "cuda" else "cpu")
    return run_trials(study, objective, resolved, gate, callbacks)


__all__ = ["ATTR_DEVICE", "ATTR_HOST", "ATTR_INTERRUPTED", "ATTR_PID", "ATTR_SURPLUS", "ATTR_WORKER", "ENV_DEVICE",
           "ENV_WORKER_ID", "POLL_SECONDS", "SearchPlan", "SurplusTrial", "TERMINATION_REQUESTED", "TrialGate", "UNCLAIMED_GRACE_SECONDS", "interrupts_held",
           "mark_interrupted", "raise_if_terminated", "reclaim_dead_trials", "requeue", "run_plan", "run_trials", "this_worker"]
