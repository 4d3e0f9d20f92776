"""`run --report-to` and `train --report-to` through the real command line, read back from
a real MLflow file store, TensorBoard event files and W&B offline run files."""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

TRACKER_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "TENSORBOARD_LOGGING_DIR", "WANDB_DIR", "WANDB_MODE",
                     "WANDB_API_KEY", "WANDB_PROJECT")


@pytest.fixture(autouse=True)
def no_tracker_settings(monkeypatch):
    """The defaults under test, whatever the environment running the tests says."""
    for variable in TRACKER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def wandb_runs(folder: Path) -> list[dict]:
    """The offline runs under ``folder``: name, group, project, config, history, summary, exit code.

    A ``.wandb`` file is a LevelDB-style log of protobuf ``Record``s after a 7-byte header:
    32 KiB blocks of chunks, each with a checksum, a length and a type (full, first,
    middle, last). wandb 0.31 no longer ships a Python reader for it.
    """
    from wandb.proto.wandb_internal_pb2 import Record

    runs = []
    for path in sorted(folder.glob("offline-run-*/run-*.wandb")):
        data, position, chunks = path.read_bytes(), 7, b""
        run = {"config": {}, "history": [], "summary": {}, "exit_code": None}
        while position + 7 <= len(data):
            if 32768 - position % 32768 < 7:  # a block's padding
                position += 32768 - position % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[position:position + 7])
            chunks += data[position + 7:position + 7 + length]
            position += 7 + length
            if kind not in (1, 4):  # not the last chunk of a record yet
                continue
            record, chunks = Record.FromString(chunks), b""
            which = record.WhichOneof("record_type")
            if which == "run":
                run |= {"name": record.run.display_name, "group": record.run.run_group, "project": record.run.project}
                run["config"] |= {item.key: json.loads(item.value_json) for item in record.run.config.update}
            elif which == "config":
                run["config"] |= {item.key: json.loads(item.value_json) for item in record.config.update}
            elif which == "history":
                run["history"].append({"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item})
            elif which == "summary":
                run["summary"] |= {item.key: json.loads(item.value_json) for item in record.summary.update if item.key}
            elif which == "exit":
                run["exit_code"] = record.exit.exit_code
        runs.append(run)
    return runs


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_run_reports_every_trial_and_the_summary_to_each_tracker(cli, tiny_options, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-files"))  # W&B's own variable wins over the default
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 2, "--study", "tracked", "--storage", storage,
                 *tiny_options(), "--report-to", "mlflow", "--report-to", "tensorboard", "--report-to", "wandb")
    assert result.code == 0, result.err
    study = optuna.load_study(study_name="tracked", storage=storage)
    best = study.best_trial

    # where each tracker writes and how to view it, once, before the trials' lines
    store, board = (tmp_path / "tracking" / "mlruns").as_uri(), tmp_path / "tracking" / "tensorboard" / "tracked"
    lines = result.err.splitlines()
    assert lines[1:4] == [
        f"tracking: mlflow: experiment 'tracked' in {store} (view: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {store})",
        f"tracking: tensorboard: {board} (view: tensorboard --logdir {board})",
        f"tracking: wandb: offline runs in {tmp_path / 'wandb-files' / 'wandb'}, project 'lora-search', group 'tracked' "
        f"(upload: wandb sync {tmp_path / 'wandb-files' / 'wandb'}/offline-run-*)",
    ]
    # nothing else on the terminal but the tool's own lines (the tiny baseline learns nothing: a warning says so)
    own = [line for line in lines[4:] if not line.startswith("warning: the proxy (")]
    assert [line.split()[:2] for line in own] == [["trial", "0"], ["trial", "1"]]

    client = MlflowClient(store)
    runs = {run.info.run_name: run for run in client.search_runs([client.get_experiment_by_name("tracked").experiment_id])}
    assert set(runs) == {"tracked/trial-0", "tracked/trial-1", "tracked/summary"}
    for trial in study.trials:
        data = runs[f"tracked/trial-{trial.number}"].data
        assert {key: data.params[f"search.{key}"] for key in trial.params} == {key: str(value) for key, value in trial.params.items()}
        assert data.metrics["value"] == pytest.approx(trial.value)
        assert len(client.get_metric_history(runs[f"tracked/trial-{trial.number}"].info.run_id, "eval_loss")) > 1
    summary = runs["tracked/summary"].data.metrics
    assert summary["best_trial"] == best.number and summary["best_value"] == pytest.approx(best.value)
    assert summary["baseline_trial"] == 0 and summary["baseline_value"] == pytest.approx(study.trials[0].value)
    assert summary["trials.complete"] == 2

    assert sorted(path.name for path in board.iterdir()) == ["summary", "trial-0", "trial-1"]
    assert len(scalars(board / "trial-1")["eval/loss"]) > 1
    assert scalars(board / "summary")["best_value"] == [(0, pytest.approx(best.value))]

    runs = wandb_runs(tmp_path / "wandb-files" / "wandb")
    assert [(run["name"], run["group"], run["project"], run["exit_code"]) for run in runs] == [
        ("tracked/trial-0", "tracked", "lora-search", 0), ("tracked/trial-1", "tracked", "lora-search", 0),
        ("tracked/summary", "tracked", "lora-search", 0)]
    for trial, run in zip(study.trials, runs):
        assert {key: run["config"][f"search.{key}"] for key in trial.params} == trial.params
        assert run["config"]["run_name"] == f"tracked/trial-{trial.number}"  # the Trainer's arguments
        assert len([step for step in run["history"] if "eval/loss" in step]) > 1
        assert run["summary"]["value"] == pytest.approx(trial.value)
    assert runs[2]["summary"]["best_value"] == pytest.approx(best.value)
    assert "parameter importances" in runs[2]["summary"]["summary"]
    assert not (tmp_path / "tracking" / "wandb").exists()


def test_each_config_a_rung_trains_is_a_run_of_its_own(cli, tiny_options, tmp_path):
    from mlflow.tracking import MlflowClient

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 3, "--study", "climbed", "--storage", storage,
                 *tiny_options(train_sample=16), "--rungs", 2, "--report-to", "mlflow")
    assert result.code == 0, result.err
    (rung,) = optuna.load_study(study_name="climbed", storage=storage).user_attrs["lora_search.rung_results"]["rungs"]
    assert "0" in rung["results"] and len(rung["results"]) >= 2  # the baseline and a searched config at the top rung
    client = MlflowClient((tmp_path / "tracking" / "mlruns").as_uri())
    runs = {run.info.run_name: run for run in client.search_runs([client.get_experiment_by_name("climbed").experiment_id])}
    assert set(runs) == {"climbed/trial-0", "climbed/trial-1", "climbed/trial-2", "climbed/summary",
                         *(f"climbed/trial-{number}-rung-1" for number in rung["results"])}
    for number, stored in rung["results"].items():
        run = runs[f"climbed/trial-{number}-rung-1"]
        assert (run.data.params["trial"], run.data.params["rung"], run.data.params["stop_reason"]) == (number, "1", stored["stop_reason"])
        assert run.data.metrics["value"] == pytest.approx(stored["value"])
        assert run.data.metrics["examples_seen"] == stored["examples_seen"] and run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "eval_loss")
        assert len(history) == len(stored["evaluations"]) and min(m.value for m in history) == pytest.approx(stored["value"])


def test_train_reports_one_run_named_after_preset_and_output(cli, tiny_bert, tiny_reviews, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # the default storage's folder: studies/tracking
    options = ["--model", tiny_bert, "--data", tiny_reviews, "--max-length", 16, "--threads", 1]
    result = cli("train", "--preset", "quick", "--output", tmp_path / "out", *options, "--report-to", "mlflow")
    assert result.code == 0, result.err
    store = (tmp_path / "studies" / "tracking" / "mlruns").as_uri()
    assert f"tracking: mlflow: experiment 'quick' in {store}" in result.err
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("quick").experiment_id])
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert run.info.run_name == "quick/out" and run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(record["metrics"]["test_accuracy"])
    assert run.data.metrics["validation_loss"] == pytest.approx(record["metrics"]["validation_loss"])
    assert run.data.params["lora.r"] == str(record["config"]["lora"]["r"])
    assert run.data.params["workload.model"] == str(tiny_bert)
    # the Trainer's logs: its arguments, its evaluation (one: a 6-step epoch), its training loss
    assert run.data.params["run_name"] == "quick/out" and run.data.params["save_total_limit"] == "2"
    assert [point.step for point in client.get_metric_history(run.info.run_id, "eval_loss")] == [6]
    assert run.data.metrics["train_loss"] > 0


def test_an_unknown_tracker_is_one_line_listing_the_choices(cli, tmp_path):
    result = cli("run", "--space", "quick-experiment", "--storage", tmp_path / "s.db", "--report-to", "neptune")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "invalid choice: 'neptune' (choose from 'mlflow', 'tensorboard', 'wandb')" in result.err
    assert not (tmp_path / "s.db").exists()


# A tracker's package as Python sees it when it is not installed: its import raises
# ModuleNotFoundError. Set up before lora-search starts, in a process of its own.
HIDE_MLFLOW = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "mlflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from lora_search._cli import main
sys.exit(main(sys.argv[1:]))
"""


TRIAL_ONLY = ("--train-sample", "--eval-sample", "--evaluations")  # of tiny_options: train refuses them


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_tracker_that_is_not_installed_stops_the_command_before_anything_is_written(command, tiny_options, tmp_path):
    options = {"run": ["--space", "quick-experiment", "--storage", str(tmp_path / "s.db")],
               "train": ["--preset", "quick", "--output", str(tmp_path / "out")]}[command]
    pairs = list(zip(tiny_options()[::2], map(str, tiny_options()[1::2])))
    workload = [part for option, value in pairs if command == "run" or option not in TRIAL_ONLY for part in (option, value)]
    result = subprocess.run([sys.executable, "-c", HIDE_MLFLOW, command, *options, *workload,
                             "--report-to", "tensorboard", "--report-to", "mlflow"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr == (f"lora-search {command}: error: --report-to mlflow needs mlflow-skinny, which is not installed: "
                             "pip install 'lora-search[track]' (or pip install mlflow-skinny)\n")
    assert list(tmp_path.iterdir()) == []


def test_the_trackers_reach_worker_processes_through_the_plan():
    from lora_search._loop import SearchPlan
    from lora_search.objectives import Tracking

    tracking = Tracking(("mlflow", "wandb"), "/tmp/studies/tracking")
    plan = SearchPlan("s", None, "quick-experiment", None, {}, {}, "minimize", "tpe", "median", 1, 3, None,
                      tracking=dataclasses.asdict(tracking))
    received = SearchPlan(**json.loads(json.dumps(dataclasses.asdict(plan))))  # what _workers sends, what _worker_main reads
    assert Tracking(**received.tracking) == tracking


@pytest.mark.slow
def test_workers_report_their_trials(cli, tiny_options, tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 2, "--study", "workers", "--storage", storage,
                 *tiny_options(), "--workers", 2, "--report-to", "tensorboard", "--quiet")
    assert result.code == 0, result.err
    board = tmp_path / "tracking" / "tensorboard" / "workers"
    assert sorted(path.name for path in board.iterdir()) == ["summary", "trial-0", "trial-1"]
    assert all(len(scalars(board / f"trial-{n}")["eval/loss"]) > 1 for n in (0, 1))
