"""Trials tracked in a real MLflow file store and real TensorBoard event files, read back.

The trackers are the optional 'track' extra: a test whose tracker is not installed (the GPU
image lacks MLflow and W&B) is skipped; both test environments of .ci/run install them."""

from __future__ import annotations

import optuna
import pytest

from lora_search.objectives import Tracking

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def no_tracker_settings(monkeypatch):
    """The defaults under test, whatever the environment running the tests says."""
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(variable, raising=False)


def tracked_study(objective, configs, tracking, monkeypatch, name, pruner=None):
    """A study ``name`` whose trials train ``configs`` in turn, reported to ``tracking``.

    Each trial first suggests its LoRA rank (one value), so it has a search parameter.
    """
    monkeypatch.setattr(objective, "tracking", tracking)
    study = optuna.create_study(study_name=name, direction=objective.direction, pruner=pruner or optuna.pruners.NopPruner())

    def trial_of(trial):
        config = configs[trial.number]
        trial.suggest_categorical("lora.r", [config.lora.r])
        return objective(trial, config)

    study.optimize(trial_of, n_trials=len(configs))
    return study


def test_each_trial_is_a_run_of_the_study_experiment_in_mlflow(tiny_objective, good_config, bad_config, tmp_path, monkeypatch):
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient  # the optional 'track' extra

    tracking = Tracking(("mlflow",), str(tmp_path))
    store = (tmp_path / "mlruns").as_uri()
    assert tracking.prepare("tiny") == [
        f"mlflow: experiment 'tiny' in {store} (view: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {store})"
    ]
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=100)
    study = tracked_study(tiny_objective, [good_config, bad_config], tracking, monkeypatch, "tiny", pruner)

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("tiny")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"tiny/trial-0", "tiny/trial-1"}
    good, bad = runs["tiny/trial-0"].data, runs["tiny/trial-1"].data
    assert runs["tiny/trial-0"].info.status == runs["tiny/trial-1"].info.status == "FINISHED"
    # what the trial adds: its search parameters, LoRA settings, user attributes and value
    assert good.params["search.lora.r"] == good.params["lora.r"] == str(good_config.lora.r)
    assert good.params["lora.target_modules"] == "all-linear"
    assert good.params["stop_reason"] == "completed" and bad.params["stop_reason"] == "pruned"
    assert good.metrics["value"] == pytest.approx(study.trials[0].value) and "value" not in bad.metrics
    assert good.metrics["trainable_parameters"] == study.trials[0].user_attrs["trainable_parameters"]
    assert good.metrics["memory_estimate_gb.total"] == study.trials[0].user_attrs["memory_estimate_gb"]["total"]
    # what the Trainer's integration logs: its arguments, every evaluation, the training loss
    assert good.params["learning_rate"] == str(good_config.learning_rate)
    evaluations = study.trials[0].user_attrs["evaluations"]
    curve = client.get_metric_history(runs["tiny/trial-0"].info.run_id, "eval_loss")
    assert [point.step for point in curve] == [evaluation["optimizer_step"] for evaluation in evaluations] == [8, 16, 24, 32]
    assert [point.value for point in curve] == pytest.approx([evaluation["eval_loss"] for evaluation in evaluations], abs=1e-6)
    assert len(client.get_metric_history(runs["tiny/trial-0"].info.run_id, "loss")) == 4  # once per evaluation
    assert len(client.get_metric_history(runs["tiny/trial-1"].info.run_id, "eval_loss")) == 2  # pruned at the second


def test_each_trial_is_a_tensorboard_folder_and_tracking_changes_no_value(tiny_objective, good_config, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    untracked = tracked_study(tiny_objective, [good_config], None, monkeypatch, "plain").trials[0]
    trial = tracked_study(tiny_objective, [good_config], Tracking(("tensorboard",), str(tmp_path)), monkeypatch, "tiny").trials[0]
    assert trial.value == untracked.value  # the training loss logged on the way changes nothing

    events = EventAccumulator(str(tmp_path / "tensorboard" / "tiny" / "trial-0"), size_guidance={"scalars": 0})
    events.Reload()
    assert [event.step for event in events.Scalars("eval/loss")] == [8, 16, 24, 32]
    assert len(events.Scalars("train/loss")) == 4
    assert events.Scalars("value")[0].value == pytest.approx(trial.value)
    assert events.Scalars("trainable_parameters")[0].value == trial.user_attrs["trainable_parameters"]
    session = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["lora.r"].number_value == hparams["search.lora.r"].number_value == good_config.lora.r
    assert hparams["stop_reason"].string_value == "completed"


def test_a_run_ends_failed_when_its_block_raises_and_killed_when_interrupted(tmp_path):
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient  # the optional 'track' extra

    tracking = Tracking(("mlflow",), str(tmp_path))
    tracking.prepare("ends")
    for leaf, error in (("failed", RuntimeError("boom")), ("pruned", optuna.TrialPruned()), ("interrupted", KeyboardInterrupt())):
        with pytest.raises(type(error)), tracking.run("ends", leaf) as run:
            run.log(params={"kind": leaf}, metrics={"value": 1.0}, texts={"note": "a document"})
            raise error
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("ends").experiment_id])
    assert {run.info.run_name: run.info.status for run in runs} == {
        "ends/failed": "FAILED", "ends/pruned": "FINISHED", "ends/interrupted": "KILLED"}
    assert all(run.data.params["kind"] == run.info.run_name.split("/")[1] for run in runs)
    assert client.download_artifacts(runs[0].info.run_id, "note.txt", str(tmp_path)) and (tmp_path / "note.txt").read_text() == "a document"


def test_a_run_goes_on_from_an_earlier_one_where_the_tracker_can(tmp_path, monkeypatch):
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient  # the optional 'track' extra

    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracking = Tracking(("mlflow", "wandb"), str(tmp_path))
    tracking.prepare("resumed")
    with pytest.raises(KeyboardInterrupt), tracking.run("resumed", "out") as first:
        raise KeyboardInterrupt
    earlier = first.ids()
    assert sorted(earlier) == ["mlflow", "wandb"]
    with tracking.run("resumed", "out").going_on_from(earlier) as second:
        second.log(metrics={"value": 2.0})
    # MLflow reopens the run; W&B cannot resume an offline run: a new one
    assert second.ids()["mlflow"] == earlier["mlflow"] and second.ids()["wandb"] != earlier["wandb"]
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["value"] == 2.0

    # a run the store does not hold (another MLFLOW_TRACKING_URI then) is not an error: a new run
    with tracking.run("resumed", "out").going_on_from({"mlflow": "0" * 32}) as third:
        pass
    assert third.ids()["mlflow"] not in (earlier["mlflow"], "0" * 32)
    assert len(client.search_runs([client.get_experiment_by_name("resumed").experiment_id])) == 2


def test_unknown_trackers_are_refused():
    with pytest.raises(ValueError, match="choose from mlflow, tensorboard, wandb"):
        Tracking(("neptune",), ".")
