"""Several processes on one study: who runs which trial, on which device, until when.

Any number of ``lora-search run`` processes, on one host or many, may share a study
through its storage; ``run --workers N`` starts N such processes on this host and
watches the study from the parent. The rules that keep them consistent live here:

- **Exactly the target.** A trial counts towards ``--trials`` once it is finished
  (complete, pruned or infeasible); failed trials do not. A process starts a trial only
  while finished + running < target, and waits (rather than quits) while the running
  trials of others could still fail and leave room. Two processes may still both start
  a trial in the same instant; the later-numbered one then sees it is one too many
  (``begin_trial``), waits for room, and ends as a failed trial marked
  ``surplus`` if none appears, before it trains anything.
- **Dead workers.** A trial whose process died (SIGKILL, OOM killer, lost host) is
  failed and re-queued with the same parameters: on relational storages by Optuna's
  heartbeats (another host notices within the grace period), on this host at once by
  checking the process id recorded on the trial (this is what covers the journal file,
  which has no heartbeats).
- **Interrupts.** SIGTERM is turned into KeyboardInterrupt; the running trial ends as
  failed with user attr ``interrupted`` and is re-queued, so the next run resumes it.
- **Devices.** With GPUs each worker owns one (``CUDA_VISIBLE_DEVICES``); on CPU the
  cores are split between the workers (two one-thread workers beat one two-thread one).

Each trial records where it ran: user attrs ``worker.host``, ``worker.id``,
``worker.pid`` and ``worker.device``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ._errors import WorkerError

if TYPE_CHECKING:
    import optuna

    from ._engine import SearchPlan
    from ._trials import TrialCounts

# Environment of a worker process started by ``run --workers N``.
ENV_WORKER_ID = "LORA_SEARCH_WORKER_ID"
ENV_DEVICE = "LORA_SEARCH_DEVICE"

ATTR_HOST = "worker.host"
ATTR_WORKER = "worker.id"
ATTR_PID = "worker.pid"
ATTR_DEVICE = "worker.device"
ATTR_INTERRUPTED = "interrupted"
ATTR_SURPLUS = "surplus"

# Worker i samples with the plan's seed + i x this (resumed runs offset the seed by the
# study's length, which stays far below it), so no two workers draw alike.
WORKER_SEED_STRIDE = 100_003

# Seconds between looks at the storage while waiting for room or for workers.
POLL_SECONDS = 1.0

# Exit codes of a worker process (the parent turns them into the run's outcome).
EXIT_DONE = 0
EXIT_USER_ERROR = 2
EXIT_FAILURES = 3
EXIT_INTERRUPTED = 130


# --- who and where ----------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process: its number, the device it owns and its share of the CPU."""

    worker_id: int
    device: str  # "cpu" or "cuda:N" (N: the physical GPU index)
    torch_threads: int
    env: dict[str, str]  # set in the worker's environment before torch is imported


def parse_devices(text: str) -> list[int]:
    """``"0,1,3"`` -> ``[0, 1, 3]``; WorkerError for anything else."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise WorkerError(f"--devices {text!r} is not a list of GPU numbers: write e.g. --devices 0,1,3")
    devices = [int(part) for part in parts]
    if len(set(devices)) != len(devices):
        raise WorkerError(f"--devices {text!r} names a GPU twice: each worker owns one GPU")
    return devices


def plan_workers(workers: int, *, accelerator: str, gpu_count: int, cpu_cores: int,
                 devices: list[int] | None = None) -> list[WorkerSlot]:
    """Assign devices and threads to ``workers`` processes (pure: no hardware is probed).

    GPUs: worker i owns the i-th GPU of ``devices`` (default: all ``gpu_count``), which
    it sees as its only GPU; more workers than GPUs is an error, since two trials on one
    GPU fight over its memory. CPU: each worker gets ``cpu_cores // workers`` threads
    (at least 1); more workers than cores still runs, one thread each.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise WorkerError(f"--workers must be a whole number >= 1, got {workers!r}")
    if accelerator == "cuda":
        chosen = list(range(gpu_count)) if devices is None else devices
        missing = [d for d in chosen if d >= gpu_count]
        if missing:
            raise WorkerError(
                f"--devices names GPU {missing[0]}, but this host has {gpu_count} (numbered 0 to {gpu_count - 1})"
            )
        if workers > len(chosen):
            raise WorkerError(
                f"--workers {workers} needs {workers} GPUs (one per worker), but {len(chosen)} "
                f"{'is' if len(chosen) == 1 else 'are'} available ({','.join(map(str, chosen))}): "
                f"lower --workers or list more --devices"
            )
        # a GPU worker needs few CPU threads (data loading, the optimizer's bookkeeping)
        threads = max(1, cpu_cores // workers)
        return [
            WorkerSlot(i, f"cuda:{gpu}", threads, {"CUDA_VISIBLE_DEVICES": str(gpu), ENV_WORKER_ID: str(i),
                                                   ENV_DEVICE: f"cuda:{gpu}"})
            for i, gpu in enumerate(chosen[:workers])
        ]
    if devices is not None:
        raise WorkerError("--devices lists GPUs, but no CUDA GPU was found on this host: drop --devices")
    threads = max(1, cpu_cores // workers)  # 2 cores / 2 workers = 1 thread each
    return [
        WorkerSlot(i, "cpu", threads, {ENV_WORKER_ID: str(i), ENV_DEVICE: "cpu", "OMP_NUM_THREADS": str(threads)})
        for i in range(workers)
    ]


def local_slots(workers: int, devices: str | None) -> list[WorkerSlot]:
    """plan_workers for this host's hardware."""
    from .objectives import detect_hardware

    hardware = detect_hardware()
    cpu_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return plan_workers(
        workers,
        accelerator=hardware["accelerator"],
        gpu_count=hardware["devices"] if hardware["accelerator"] == "cuda" else 0,
        cpu_cores=cpu_cores,
        devices=parse_devices(devices) if devices is not None else None,
    )


def this_worker(default_device: str = "cpu") -> dict[str, Any]:
    """The user attrs naming this process: host, worker id, pid and device."""
    return {
        ATTR_HOST: socket.gethostname(),
        ATTR_WORKER: int(os.environ.get(ENV_WORKER_ID, "0")),
        ATTR_PID: os.getpid(),
        ATTR_DEVICE: os.environ.get(ENV_DEVICE, default_device),
    }


# --- the target and the trials of dead workers ------------------------------------------


def _counts(study: optuna.Study) -> TrialCounts:
    from ._trials import count_states

    return count_states(study.get_trials(deepcopy=False))


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

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, _fresh_copy(trial))


def _fresh_copy(trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """The trial without what belonged to its failed run (where it ran, why it failed)."""
    import copy

    clone = copy.deepcopy(trial)
    clone.user_attrs = {k: v for k, v in trial.user_attrs.items() if not k.startswith("worker.") and k != ATTR_INTERRUPTED}
    clone.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != "fail_reason"}
    return clone


def reclaim_dead_trials(study: optuna.Study) -> list[int]:
    """Fail and re-queue the running trials whose process is gone; returns their numbers.

    Heartbeats cover any host on relational storages; the recorded pid covers this host
    on every storage (and immediately, without waiting for the grace period).
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
        if trial.user_attrs.get(ATTR_HOST) != host or pid is None or pid == os.getpid() or _process_alive(int(pid)):
            continue
        try:
            study._storage.set_trial_system_attr(trial._trial_id, "fail_reason", f"worker process {pid} died")
            failed = study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process was quicker
        if failed:
            requeue(study, study._storage.get_trial(trial._trial_id))
            reclaimed.append(trial.number)
    return reclaimed


def wait_for_room(study: optuna.Study, target: int, deadline: float | None,
                  sleep: Callable[[float], None] = time.sleep) -> TrialCounts:
    """Counts once the study is done (finished >= target) or has room for one more trial
    (finished + running < target), or the deadline (``time.time()``) has passed.

    Waiting rather than quitting while other workers' trials run matters: one of them may
    fail, and then someone must run a replacement to reach the target.
    """
    while True:
        reclaim_dead_trials(study)
        counts = _counts(study)
        if counts.finished >= target or counts.finished + counts.running < target:
            return counts
        if deadline is not None and time.time() >= deadline:
            return counts
        sleep(POLL_SECONDS)


class SurplusTrial(RuntimeError):
    """This trial started when the target was already taken by other running trials."""


def begin_trial(study: optuna.Study, trial: optuna.Trial, target: int, deadline: float | None,
                default_device: str = "cpu") -> None:
    """Call first thing in the objective: records where the trial runs, then makes sure
    it is not one too many (raises SurplusTrial, before any training, if it is)."""
    from optuna.trial import TrialState

    for key, value in this_worker(default_device).items():
        trial.set_user_attr(key, value)
    while True:
        trials = study.get_trials(deepcopy=False)
        finished = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
        ahead = sum(1 for t in trials if t.state == TrialState.RUNNING and t.number <= trial.number)
        if finished + ahead <= target:
            return
        if finished >= target or (deadline is not None and time.time() >= deadline):
            trial.set_user_attr(ATTR_SURPLUS, True)
            study._storage.set_trial_system_attr(
                trial._trial_id, "fail_reason", "surplus: other workers had already started the last trials"
            )
            raise SurplusTrial(f"trial {trial.number} is surplus: the target of {target} was already taken")
        time.sleep(POLL_SECONDS)
        reclaim_dead_trials(study)


def mark_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record that the running trial was interrupted and queue it for the next run."""
    import optuna

    trial.set_user_attr(ATTR_INTERRUPTED, True)
    study._storage.set_trial_system_attr(trial._trial_id, "fail_reason", "interrupted (Ctrl-C or SIGTERM)")
    requeue(study, study._storage.get_trial(trial._trial_id))
    # the run ends now and the trial is recorded: Optuna's traceback of the interrupt
    # ("Trial N failed ... KeyboardInterrupt") would only bury the one-line message
    optuna.logging.set_verbosity(optuna.logging.ERROR)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's stop) ends the run like Ctrl-C does."""

    def interrupt(signum: int, frame: Any) -> None:
        # a second SIGTERM (e.g. the parent forwarding one) must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- worker processes ---------------------------------------------------------------


def worker_command() -> list[str]:
    return [sys.executable, "-m", "lora_search._worker_main"]


@dataclass
class _Worker:
    slot: WorkerSlot
    process: subprocess.Popen
    returncode: int | None = None


def run_worker_processes(plan: SearchPlan, slots: list[WorkerSlot], *,
                         on_trial: Callable[..., None] | None = None) -> str:
    """Start one process per slot on the plan's study and watch the study until they end.

    ``on_trial(study, frozen_trial)`` is called for each trial that ends while watching
    (whichever worker ran it): progress for the whole study, not per worker. Returns why
    the run stopped: "target", "timeout" or "interrupted"; raises WorkerError when
    workers failed in a way the user must look at.
    """
    from ._engine import open_plan_study

    study = open_plan_study(plan)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    workers: list[_Worker] = []
    interrupted = False
    try:
        with sigterm_as_interrupt():
            for slot in slots:
                worker_plan = dataclasses.replace(
                    plan,
                    workload={**plan.workload, "torch_threads": slot.torch_threads},
                    # one seed for all would make the workers propose the same parameters
                    sampler_seed=plan.sampler_seed + WORKER_SEED_STRIDE * slot.worker_id,
                )
                process = subprocess.Popen(
                    worker_command(),
                    stdin=subprocess.PIPE,
                    env={**os.environ, **slot.env},
                    text=True,
                )
                assert process.stdin is not None
                process.stdin.write(json.dumps(dataclasses.asdict(worker_plan)))
                process.stdin.close()
                workers.append(_Worker(slot, process))
            while any(w.returncode is None for w in workers):
                for worker in workers:
                    if worker.returncode is None:
                        worker.returncode = worker.process.poll()
                reclaim_dead_trials(study)  # a worker killed mid-trial: its trial goes back to the queue
                for trial in study.get_trials(deepcopy=False):
                    if trial.state.is_finished() and trial.number not in seen:
                        seen.add(trial.number)
                        if on_trial is not None:
                            on_trial(study, trial)
                time.sleep(POLL_SECONDS / 2)
    except KeyboardInterrupt:
        interrupted = True
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.returncode = worker.process.wait()
        reclaim_dead_trials(study)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
    codes = [w.returncode for w in workers]
    if interrupted or EXIT_INTERRUPTED in codes:
        return "interrupted"
    if EXIT_USER_ERROR in codes or EXIT_FAILURES in codes:
        raise WorkerError(
            f"worker processes ended with errors (exit codes {', '.join(map(str, codes))}); "
            "their messages are above"
        )
    counts = _counts(study)
    if counts.finished >= plan.target:
        return "target"
    if plan.deadline is not None and time.time() >= plan.deadline:
        return "timeout"
    killed = [f"worker {w.slot.worker_id} ({_describe_exit(w.returncode)})" for w in workers if w.returncode != EXIT_DONE]
    raise WorkerError(
        f"the workers stopped with {counts.finished}/{plan.target} trials finished"
        + (f": {', '.join(killed)}" if killed else "")
        + "; run the same command again to resume"
    )


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
