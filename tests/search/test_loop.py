"""The rules of the trial loop, on real storages with hand-made trials: the exact target,
surplus trials, dead and interrupted trials."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from lora_search._errors import SearchError
from lora_search._loop import (
    ATTR_HOST,
    ATTR_INTERRUPTED,
    ATTR_PID,
    ATTR_SURPLUS,
    UNCLAIMED_GRACE_SECONDS,
    WAIT_NOTE_POLLS,
    SurplusTrial,
    TrialGate,
    interrupts_held,
    mark_interrupted,
    reclaim_dead_trials,
    run_trials,
)
from lora_search._storage import open_storage
from lora_search._trials import count_states

optuna.logging.set_verbosity(optuna.logging.WARNING)
# ask/tell by hand on an SQLite storage with heartbeats: Optuna warns that it expects optimize()
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


@pytest.fixture(params=["sqlite", "journal"])
def study(request, tmp_path):
    spec = str(tmp_path / ("s.db" if request.param == "sqlite" else "s.journal"))
    return optuna.create_study(study_name="w", storage=open_storage(spec))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_trial_of_a_dead_process_is_failed_and_requeued(study):
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-3, log=True)
    trial.set_user_attr(ATTR_HOST, socket.gethostname())
    trial.set_user_attr(ATTR_PID, _dead_pid())
    alive = study.ask()  # this process's own trial is left alone
    alive.set_user_attr(ATTR_HOST, socket.gethostname())
    alive.set_user_attr(ATTR_PID, os.getpid())

    assert reclaim_dead_trials(study) == [trial.number]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    retry = trials[2]
    assert retry.params == trial.params
    assert retry.system_attrs["failed_trial"] == trial.number
    assert ATTR_PID not in retry.user_attrs and "fail_reason" not in retry.system_attrs
    assert "died" in trials[0].system_attrs["fail_reason"]
    assert reclaim_dead_trials(study) == []  # once only
    # the next ask runs the retry with the same parameters
    again = study.ask()
    assert again.number == retry.number and again.suggest_float("lr", 1e-5, 1e-3, log=True) == trial.params["lr"]


def test_a_trial_no_process_claimed_is_reclaimed_after_the_grace_and_the_loop_goes_on(study):
    """A process killed inside Optuna's ask() leaves a running trial with no pid and no
    heartbeat. A fresh one may be another process's, drawing now; an old one is dead, and
    until it is reclaimed a resumed run would wait for it without end."""
    import datetime

    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial

    started = datetime.datetime.now() - datetime.timedelta(seconds=UNCLAIMED_GRACE_SECONDS + 5)
    study.add_trial(FrozenTrial(number=0, trial_id=0, state=TrialState.RUNNING, value=None, datetime_start=started,
                                datetime_complete=None, params={"x": 0.25}, distributions={"x": FloatDistribution(0, 1)},
                                user_attrs={}, system_attrs={}, intermediate_values={}))
    assert run_trials(study, lambda trial, x: x, _Line(), TrialGate(target=1, deadline=None, sleep=pytest.fail)) == "target"
    unclaimed, retry = study.get_trials()
    assert unclaimed.state == TrialState.FAIL and "no process claimed it within 10 minutes" in unclaimed.system_attrs["fail_reason"]
    assert retry.state == TrialState.COMPLETE and retry.value == 0.25  # reclaimed before any wait, then retried

    drawing_now = study.ask()  # as another process's trial would be while it draws
    assert reclaim_dead_trials(study) == [] and study.get_trials()[-1].state == TrialState.RUNNING
    study.tell(drawing_now, state=TrialState.FAIL)


def test_trial_on_another_host_is_left_to_heartbeats(study):
    trial = study.ask()
    trial.set_user_attr(ATTR_HOST, "some-other-host")
    trial.set_user_attr(ATTR_PID, _dead_pid())
    assert reclaim_dead_trials(study) == []
    assert study.get_trials()[0].state == TrialState.RUNNING


def test_surplus_trial_ends_before_training(study):
    first, second = study.ask(), study.ask()
    gate = TrialGate(target=1, deadline=None, sleep=pytest.fail)
    gate.admit(study, first)
    study.tell(first, 1.0)
    with pytest.raises(SurplusTrial):
        gate.admit(study, second)
    frozen = study.get_trials()[1]
    assert frozen.user_attrs[ATTR_SURPLUS] is True and frozen.params == {}


def test_trial_within_the_target_proceeds(study):
    trials = [study.ask() for _ in range(3)]
    gate = TrialGate(target=3, deadline=None, sleep=pytest.fail)  # a wait would fail the test
    for trial in trials:
        gate.admit(study, trial)  # returns at once
    assert not any(ATTR_SURPLUS in t.user_attrs for t in study.get_trials())


def test_a_trial_one_too_many_waits_for_an_earlier_one_to_fail(study):
    earlier, later = study.ask(), study.ask()
    naps = []

    def nap(seconds):  # the other worker's trial fails while this one waits
        naps.append(seconds)
        study.tell(earlier, state=TrialState.FAIL)

    TrialGate(target=1, deadline=None, sleep=nap).admit(study, later)
    assert len(naps) == 1 and ATTR_SURPLUS not in study.get_trials()[1].user_attrs


def test_the_gate_waits_while_others_run(study):
    running = study.ask()
    naps = []

    def nap(seconds):  # the other worker's trial fails while we wait
        naps.append(seconds)
        study.tell(running, state=TrialState.FAIL)

    assert not TrialGate(target=1, deadline=None, sleep=nap).should_stop(study)
    counts = count_states(study.get_trials())
    assert len(naps) == 1 and counts.running == 0 and counts.finished == 0


def test_a_long_wait_says_once_what_it_waits_for(study, capsys):
    running = study.ask()
    running.set_user_attr(ATTR_HOST, "gpu-box")
    running.set_user_attr(ATTR_PID, 812)
    unclaimed = study.ask()
    naps = []

    def nap(seconds):  # the wait outlasts the note's threshold, then the other trials fail
        naps.append(seconds)
        if len(naps) == WAIT_NOTE_POLLS + 3:
            study.tell(running, state=TrialState.FAIL)
            study.tell(unclaimed, state=TrialState.FAIL)

    assert not TrialGate(target=2, deadline=None, sleep=nap).should_stop(study)
    assert capsys.readouterr().err == (
        f"waiting: trial 0 (pid 812 on gpu-box), trial 1 (no process recorded) could still fail and leave room under the "
        f"target of 2; a trial no process claims is reclaimed {UNCLAIMED_GRACE_SECONDS // 60} minutes after it started\n")


def test_a_trial_left_running_by_an_earlier_search_in_this_process_is_reclaimed(study):
    """A search in this process that ended on an error (the storage refused a write) left its
    trial running under this pid: the next search here knows no trial of its own runs yet."""
    left = study.ask()
    left.suggest_float("x", 0, 1)
    left.set_user_attr(ATTR_HOST, socket.gethostname())
    left.set_user_attr(ATTR_PID, os.getpid())
    assert reclaim_dead_trials(study) == []  # while a search here may be running it, it is left alone
    assert run_trials(study, lambda trial, x: x, _Line(), TrialGate(target=1, deadline=None, sleep=pytest.fail)) == "target"
    first, retry = study.get_trials()
    assert first.state == TrialState.FAIL and "an earlier search in this process ended" in first.system_attrs["fail_reason"]
    assert retry.state == TrialState.COMPLETE and retry.params == first.params


def test_a_storage_error_while_a_trial_is_drawn_fails_and_requeues_it(study, monkeypatch):
    """The storage refusing a write mid-draw (a full disk, a lost connection) left the trial
    running with no process named: the next run waited 10 minutes for it."""
    naming = optuna.trial.Trial.set_user_attr

    def refuse_the_host(trial, key, value):
        if key == ATTR_HOST:
            raise RuntimeError("database or disk is full")
        naming(trial, key, value)

    monkeypatch.setattr(optuna.trial.Trial, "set_user_attr", refuse_the_host)
    study.enqueue_trial({"x": 0.5})
    with pytest.raises(RuntimeError, match="disk is full"):
        run_trials(study, lambda trial, x: x, _Line(), TrialGate(target=1, deadline=None, sleep=pytest.fail))
    drawn, retry = study.get_trials()
    assert drawn.state == TrialState.FAIL and drawn.system_attrs["fail_reason"] == "drawing it failed: database or disk is full"
    assert retry.state == TrialState.WAITING and retry.system_attrs["fixed_params"] == {"x": 0.5}


def test_the_gate_stops_when_done(study):
    study.tell(study.ask(), 1.0)
    study.ask()  # running, but the target is already reached
    gate = TrialGate(target=1, deadline=None, sleep=pytest.fail)
    assert gate.should_stop(study) and gate.reason == "target"


def test_the_gate_stops_at_the_deadline_instead_of_waiting(study):
    study.ask()  # running, and it fills the target
    gate = TrialGate(target=1, deadline=time.time() - 1, sleep=pytest.fail)
    assert gate.should_stop(study) and gate.reason == "timeout"
    with pytest.raises(SurplusTrial):
        gate.admit(study, study.ask())


class _Line:
    """Stands in for a ResolvedSpace: one parameter, the config is its value."""

    def sample(self, trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0, 1)


def test_the_loop_runs_to_exactly_the_target(study):
    assert run_trials(study, lambda trial, x: x, _Line(), TrialGate(target=3, deadline=None)) == "target"
    assert count_states(study.get_trials()).finished == 3
    assert run_trials(study, lambda trial, x: x, _Line(), TrialGate(target=3, deadline=None)) == "target"
    assert len(study.get_trials()) == 3  # a study already at its target starts nothing


@pytest.fixture
def optuna_messages():
    """What Optuna logs while the test runs (its own handler writes to the stderr of import time)."""
    import logging

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append((record.getMessage(), record.exc_info))
    logging.getLogger("optuna").addHandler(handler)
    yield messages
    logging.getLogger("optuna").removeHandler(handler)


def test_the_loop_stops_after_three_failures_in_a_row(study, optuna_messages):
    def broken(trial, config):
        raise ValueError("broken config")

    with pytest.raises(SearchError, match="3 trials in a row failed"):
        run_trials(study, broken, _Line(), TrialGate(target=10, deadline=None))
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL] * 3
    # Optuna says why, with the traceback
    assert any("because of the following error: ValueError('broken config')" in text and exc_info for text, exc_info in optuna_messages)


def test_a_surplus_trial_ends_without_optunas_traceback(study, optuna_messages):
    """Another worker starts the last trial just after this process looked: this process's
    trial waits for room, the other completes, and this one fails as surplus before training,
    on its progress line alone (Optuna's two warnings and traceback for it are dropped)."""
    others = []

    class AnotherWorkerStartsFirst(TrialGate):
        def should_stop(self, study):
            if not others:
                others.append(study.ask())
                others[0].set_user_attr(ATTR_HOST, socket.gethostname())
                others[0].set_user_attr(ATTR_PID, os.getpid())  # alive: not reclaimed
                return False
            return super().should_stop(study)

    def nap(seconds):  # the other worker's trial completes while this one waits for room
        study.tell(others[0], 0.5)

    assert run_trials(study, lambda trial, x: x, _Line(), AnotherWorkerStartsFirst(target=1, deadline=None, sleep=nap)) == "target"
    other, surplus = study.get_trials()
    assert other.state == TrialState.COMPLETE and surplus.state == TrialState.FAIL and surplus.user_attrs[ATTR_SURPLUS]
    assert not [text for text, _ in optuna_messages if f"Trial {surplus.number} " in text], optuna_messages


def test_each_trial_names_the_process_that_runs_it(study):
    assert run_trials(study, lambda trial, x: x, _Line(), TrialGate(target=2, deadline=None)) == "target"
    assert [(t.user_attrs[ATTR_HOST], t.user_attrs[ATTR_PID]) for t in study.get_trials()] == [(socket.gethostname(), os.getpid())] * 2


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_while_a_trial_is_drawn_ends_it_as_interrupted_not_running_with_no_owner(study, stop, ctrl_c_as_in_a_terminal):
    """Optuna's ask() stores the trial as running, then samples, all before the objective: a
    stop landing there (seen in CI, a worker's trial left running with no pid) must still end
    the trial as interrupted and queue it again."""
    from lora_search._workers import sigterm_as_interrupt

    class StopWhileDrawing(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):  # the trial is stored as running by now
            super().before_trial(study, trial)
            os.kill(os.getpid(), stop)

    study.sampler = StopWhileDrawing(seed=0)
    with sigterm_as_interrupt():
        outcome = run_trials(study, lambda trial, x: x, _Line(), TrialGate(target=2, deadline=None))
    assert outcome == "interrupted"
    interrupted, retry = study.get_trials()
    assert (interrupted.state, interrupted.user_attrs[ATTR_INTERRUPTED], interrupted.user_attrs[ATTR_PID]) == (TrialState.FAIL, True, os.getpid())
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == interrupted.number


def test_the_loop_runs_in_a_thread_other_than_the_main_one(study):
    """The Python API (run_search) may run in a thread of the caller's: only the main thread
    may set signal handlers, and only it is interrupted, so nothing is held there."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        outcome = pool.submit(run_trials, study, lambda trial, x: x, _Line(), TrialGate(target=2, deadline=None)).result()
    assert outcome == "target" and count_states(study.get_trials()).finished == 2


def test_a_second_stop_while_held_acts_at_once(ctrl_c_as_in_a_terminal):
    """A storage that hangs while a trial is drawn must not make Ctrl-C useless: the first is
    held, the second interrupts the block."""
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("held")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # cut short at once
            reached.append("not reached")
    assert reached == ["held"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupted_trial_is_marked_and_requeued(study):
    trial = study.ask()
    trial.suggest_int("r", 4, 64)
    mark_interrupted(study, trial)
    study.tell(trial, state=TrialState.FAIL)
    failed, retry = study.get_trials()
    assert failed.user_attrs[ATTR_INTERRUPTED] is True and failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.params == failed.params
    assert ATTR_INTERRUPTED not in retry.user_attrs




def test_a_sigterm_while_an_interrupted_trial_is_recorded_waits_for_the_record(study, ctrl_c_as_in_a_terminal, monkeypatch):
    """A worker gets the terminal's Ctrl-C, then the SIGTERM its parent forwards: landing in
    the middle of the record, it left the trial failed and never re-queued."""
    import signal

    from lora_search import _loop
    from lora_search._workers import sigterm_as_interrupt

    trial = study.ask()
    trial.suggest_int("r", 4, 64)
    queue = _loop.requeue

    def forwarded_sigterm_first(study, frozen):
        os.kill(os.getpid(), signal.SIGTERM)
        queue(study, frozen)

    monkeypatch.setattr(_loop, "requeue", forwarded_sigterm_first)
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        mark_interrupted(study, trial)
    failed, retry = study.get_trials()
    assert failed.user_attrs[ATTR_INTERRUPTED] is True and retry.state == TrialState.WAITING
