"""Workers sharing a study: device assignment, the exact target, dead and interrupted trials.

The rules are tested here on real storages with a cheap objective; the end-to-end runs
of ``lora-search run --workers N`` with tiny models are in test_run_workers.py.
"""

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

from lora_search._storage import open_storage
from lora_search._workers import (
    ATTR_HOST,
    ATTR_INTERRUPTED,
    ATTR_PID,
    ATTR_SURPLUS,
    ENV_DEVICE,
    ENV_WORKER_ID,
    SurplusTrial,
    WorkerError,
    begin_trial,
    mark_interrupted,
    parse_devices,
    plan_workers,
    reclaim_dead_trials,
    sigterm_as_interrupt,
    wait_for_room,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
# ask/tell by hand on an SQLite storage with heartbeats: Optuna warns that it expects optimize()
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


# --- devices and threads (pure) ---------------------------------------------------------


def test_each_gpu_worker_owns_one_gpu():
    slots = plan_workers(3, accelerator="cuda", gpu_count=4, cpu_cores=16)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "2"]
    assert [s.device for s in slots] == ["cuda:0", "cuda:1", "cuda:2"]
    assert [s.env[ENV_WORKER_ID] for s in slots] == ["0", "1", "2"]
    assert all(s.torch_threads == 5 for s in slots)  # 16 cores // 3 workers


def test_device_list_picks_the_gpus():
    slots = plan_workers(3, accelerator="cuda", gpu_count=4, cpu_cores=8, devices=[0, 1, 3])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "3"]
    assert [s.env[ENV_DEVICE] for s in slots] == ["cuda:0", "cuda:1", "cuda:3"]
    assert [s.device for s in plan_workers(1, accelerator="cuda", gpu_count=4, cpu_cores=8, devices=[2])] == ["cuda:2"]


def test_fewer_workers_than_listed_gpus_use_the_first():
    slots = plan_workers(2, accelerator="cuda", gpu_count=8, cpu_cores=8, devices=[5, 6, 7])
    assert [s.device for s in slots] == ["cuda:5", "cuda:6"]


@pytest.mark.parametrize(
    ("workers", "gpus", "devices", "message"),
    [
        (3, 2, None, "needs 3 GPUs .* but 2 are available"),
        (2, 4, [1], "needs 2 GPUs .* but 1 is available"),
        (1, 2, [2], "names GPU 2, but this host has 2"),
        (0, 2, None, "must be a whole number >= 1"),
    ],
)
def test_impossible_gpu_plans(workers, gpus, devices, message):
    with pytest.raises(WorkerError, match=message):
        plan_workers(workers, accelerator="cuda", gpu_count=gpus, cpu_cores=8, devices=devices)


def test_cpu_cores_are_split():
    assert [s.torch_threads for s in plan_workers(2, accelerator="cpu", gpu_count=0, cpu_cores=2)] == [1, 1]
    assert [s.torch_threads for s in plan_workers(4, accelerator="cpu", gpu_count=0, cpu_cores=16)] == [4] * 4
    assert [s.torch_threads for s in plan_workers(3, accelerator="cpu", gpu_count=0, cpu_cores=2)] == [1, 1, 1]
    slot = plan_workers(1, accelerator="cpu", gpu_count=0, cpu_cores=2)[0]
    assert slot.device == "cpu" and "CUDA_VISIBLE_DEVICES" not in slot.env and slot.torch_threads == 2


def test_devices_without_gpus_is_an_error():
    with pytest.raises(WorkerError, match="no CUDA GPU"):
        plan_workers(1, accelerator="cpu", gpu_count=0, cpu_cores=2, devices=[0])


def test_parse_devices():
    assert parse_devices("0,1,3") == [0, 1, 3]
    assert parse_devices(" 2 ") == [2]
    for bad in ("", "a,b", "0,-1", "1,1", "cuda:0"):
        with pytest.raises(WorkerError):
            parse_devices(bad)


# --- the storage-side rules, on real storages ---------------------------------------------


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


def test_trial_on_another_host_is_left_to_heartbeats(study):
    trial = study.ask()
    trial.set_user_attr(ATTR_HOST, "some-other-host")
    trial.set_user_attr(ATTR_PID, _dead_pid())
    assert reclaim_dead_trials(study) == []
    assert study.get_trials()[0].state == TrialState.RUNNING


def test_surplus_trial_ends_before_training(study):
    first, second = study.ask(), study.ask()
    begin_trial(study, first, target=1, deadline=None)
    study.tell(first, 1.0)
    with pytest.raises(SurplusTrial):
        begin_trial(study, second, target=1, deadline=None)
    frozen = study.get_trials()[1]
    assert frozen.user_attrs[ATTR_SURPLUS] is True and frozen.params == {}
    assert frozen.user_attrs[ATTR_PID] == os.getpid()


def test_trial_within_the_target_proceeds(study):
    trials = [study.ask() for _ in range(3)]
    for trial in trials:
        begin_trial(study, trial, target=3, deadline=None)  # returns at once
    assert all(t.user_attrs[ATTR_HOST] == socket.gethostname() for t in study.get_trials())


def test_wait_for_room_waits_while_others_run(study):
    running = study.ask()
    naps = []

    def nap(seconds):  # the other worker's trial fails while we wait
        naps.append(seconds)
        study.tell(running, state=TrialState.FAIL)

    counts = wait_for_room(study, target=1, deadline=None, sleep=nap)
    assert len(naps) == 1 and counts.running == 0 and counts.finished == 0


def test_wait_for_room_returns_when_done(study):
    study.tell(study.ask(), 1.0)
    study.ask()  # running, but the target is already reached
    assert wait_for_room(study, target=1, deadline=None, sleep=pytest.fail).finished == 1


def test_interrupted_trial_is_marked_and_requeued(study):
    trial = study.ask()
    trial.suggest_int("r", 4, 64)
    mark_interrupted(study, trial)
    study.tell(trial, state=TrialState.FAIL)
    failed, retry = study.get_trials()
    assert failed.user_attrs[ATTR_INTERRUPTED] is True and failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.params == failed.params
    assert ATTR_INTERRUPTED not in retry.user_attrs


def test_sigterm_becomes_keyboard_interrupt():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once
    assert signal.getsignal(signal.SIGTERM) is before
