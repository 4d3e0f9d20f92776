"""The run request: what ``lora-search run`` and ``run_search`` accept."""

from __future__ import annotations

import pytest

from lora_search._engine import RunRequest
from lora_search._errors import SearchError


@pytest.mark.parametrize("trials", [0, -3, True, 2.5])
def test_a_run_needs_at_least_one_trial(trials):
    with pytest.raises(SearchError, match="--trials"):
        RunRequest(space="standard", trials=trials)


def test_unknown_sampler_and_pruner_are_refused():
    with pytest.raises(SearchError, match="unknown sampler 'grid'.*tpe"):
        RunRequest(space="standard", sampler="grid")
    with pytest.raises(SearchError, match="unknown pruner 'asha'.*median"):
        RunRequest(space="standard", pruner="asha")


def test_a_run_names_the_metric_and_notes_scenario_baseline_and_gain(searched):
    import optuna
    import optuna_dashboard

    study = optuna.load_study(study_name="tiny", storage=searched["storage"])
    assert study.metric_names == ["eval_loss"]  # optuna-dashboard's axis label, not "Objective 0"
    note = optuna_dashboard.get_note(study)
    assert note.startswith("**lora-search** scenario `quick-experiment`, eval_loss (minimize)\n")
    from lora_search._engine import summarize

    # other tests grow the shared study, and each run rewrites the note: compare with the study as it is now
    printed = searched["first"].out.splitlines()
    baseline = next(line for line in printed if line.startswith("baseline (guide preset, trial 0): eval_loss "))
    now = summarize(study, storage=searched["storage"], target=len(study.trials), stopped_because="target",
                    elapsed_seconds=0.0).as_text().splitlines()
    best = next(line for line in now if line.startswith("best: trial "))
    assert "vs the baseline, minimize" in best
    assert f"\n- {baseline}\n- {best}\n" in note


def test_a_new_study_stores_the_base_models_parameter_count(searched, tiny_bert):
    import optuna
    from transformers import BertForSequenceClassification

    from lora_search._study import ATTR_PROFILE

    study = optuna.load_study(study_name="tiny", storage=searched["storage"])
    parameters = sum(p.numel() for p in BertForSequenceClassification.from_pretrained(tiny_bert).parameters())
    assert study.user_attrs[ATTR_PROFILE]["model_parameters"] == parameters


def test_a_note_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path, cli, tiny_options, monkeypatch):
    import optuna
    import optuna_dashboard

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    assert cli("run", "--space", "quick-experiment", "--trials", 1, "--study", "old", "--storage", storage, *tiny_options()).code == 0
    old = optuna.load_study(study_name="old", storage=storage)
    old._storage.set_study_system_attr(old._study_id, "study:metric_names", None)  # as a study made before names were set

    def refuse(study, body):
        raise RuntimeError("attempt to write a readonly database\n(more detail)")

    monkeypatch.setattr(optuna_dashboard, "save_note", refuse)
    resumed = cli("run", "--study", "old", "--trials", 2, "--storage", storage, "--quiet")
    assert resumed.code == 0, resumed.err
    assert resumed.err == "warning: the study's dashboard note was not written: attempt to write a readonly database\n"
    assert "2/2 finished" in resumed.out
    assert old.metric_names == ["eval_loss"]  # a resumed study is named too


def test_with_workers_the_parent_counts_the_base_from_its_config_and_stores_the_same_profile(tmp_path, tiny_bert):
    """The parent of worker processes trains nothing: it leaves the weights to the workers (on a
    GPU host its copy sat on GPU 0), yet stores the profile a one-process run stores, with the
    head sized for the data's three classes, not the model config's two."""
    import csv

    from transformers import AutoTokenizer, BertModel

    from lora_search._prepare import prepare

    encoder = tmp_path / "encoder"  # the tiny BERT without its two-class head
    BertModel.from_pretrained(tiny_bert).save_pretrained(encoder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(encoder)

    data = tmp_path / "three-classes.csv"
    with data.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        for index in range(90):
            writer.writerow([f"the tea was {['good', 'bad', 'fine'][index % 3]}", ["pos", "neg", "mixed"][index % 3]])
    workload = {"model": str(encoder), "data": str(data), "train_sample": 16, "eval_sample": 16, "max_length": 16}
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    alone = prepare(RunRequest(space="quick-experiment", study="alone", storage=storage, workload=workload))
    parent = prepare(RunRequest(space="quick-experiment", study="parent", storage=storage, workload=workload, workers=2))
    assert alone.objective.base_model is not None and parent.objective.base_model is None
    assert parent.objective.model_parameters == alone.objective.model_parameters
    assert parent.study.user_attrs["lora_search.profile"] == alone.study.user_attrs["lora_search.profile"]


def test_a_resumed_study_trains_the_effective_batch_of_the_devices_its_profile_names(tmp_path, tiny_bert, tiny_options):
    """A study made on a host with 2 GPUs resolves its configs for batches spread over both:
    resumed in a process that trains on one device (a worker, this CPU) its trials accumulate
    twice as many passes, so each optimizer step still takes the config's effective batch."""
    import json
    import sqlite3

    from lora_search._prepare import prepare

    storage = tmp_path / "studies.db"
    workload = {"model": tiny_bert, "train_sample": 16, "eval_sample": 16, "max_length": 16}
    made = prepare(RunRequest(space="quick-experiment", study="two-gpus", storage=str(storage), workload=workload))
    assert made.objective.config_devices == made.objective.parallel == 1  # this CPU
    with sqlite3.connect(storage) as connection:  # as if made on a host with two 24 GB GPUs
        profile = {**made.study.user_attrs["lora_search.profile"], "accelerator": "cuda", "devices": 2,
                   "gpu_memory_gb": 24.0, "bf16_supported": True}
        connection.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = 'lora_search.profile'",
                           (json.dumps(profile),))
    resumed = prepare(RunRequest(study="two-gpus", storage=str(storage)))
    assert resumed.objective.config_devices == 2 and resumed.objective.parallel == 1
    config = resumed.resolved.guide()
    schedule, one_device = resumed.objective.schedule(config), made.objective.schedule(config)
    assert schedule.accumulation == 2 * one_device.accumulation
    # examples per optimizer step: per-device x accumulation x the profile's 2 devices
    assert schedule.per_device_batch * schedule.accumulation == config.effective_batch_size * 2
