"""The real embedded default (MiniLM on the fine-food reviews), a small budget, end to end."""

from __future__ import annotations

import math

import optuna
import pytest
import yaml


@pytest.mark.slow
def test_embedded_default_search_to_a_reloaded_preset(cli, tmp_path, monkeypatch):
    from lora_search import load_preset
    from lora_search._trials import count_states
    from lora_search.spaces import TrainingConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORA_SEARCH_STORAGE", raising=False)
    # seed 1: its five trials include one the percentile pruner stops (seed 42's improve steadily: none is)
    small = ["--train-sample", "64", "--eval-sample", "64", "--max-length", "32", "--evaluations", "3", "--seed", "1"]
    result = cli("run", "--space", "memory-constrained", "--trials", 5, "--pruner", "percentile", *small)
    assert result.code == 0, result.err

    name = "memory-constrained.minilm.fine-food"
    assert (tmp_path / "studies" / "lora-search.db").is_file()  # the default storage
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'studies' / 'lora-search.db'}")
    trials = study.get_trials()
    assert trials[0].user_attrs["baseline"] is True and trials[0].user_attrs["preset"] == "memory-constrained"
    counts = count_states(trials)
    assert counts.finished == 5 and counts.pruned >= 1, counts
    assert "baseline (guide preset, trial 0)" in result.out

    exported = cli("export", name, "--name", "reviews")
    assert exported.code == 0, exported.err
    document = yaml.safe_load((tmp_path / "studies" / "presets" / "reviews.yaml").read_text())
    assert document["provenance"]["model"] == "embedded all-MiniLM-L6-v2"
    # the search trains on 3,200 rows: 800 of the 4,000 are held out for validation, testing_data is the test split
    assert document["provenance"]["profile"]["dataset_size"] == 3200
    # the space resolved the evaluation cadence for those 3,200 rows (5-10 per epoch); the guide's
    # patience 3, counted in evaluations, is stretched to one epoch's worth for the full run
    full = document["config"]
    per_epoch = math.ceil(3200 / (full["per_device_train_batch_size"] * full["gradient_accumulation_steps"])) // full["eval_steps"]
    assert 5 <= per_epoch <= 10 and full["eval_steps"] == document["trial_config"]["eval_steps"]
    change = document["rederived"]["early_stopping_patience"]
    assert (change["trial"], change["full"]) == (3, per_epoch)
    assert f"  early_stopping_patience: 3 -> {per_epoch} ({change['reason']})" in exported.out
    assert load_preset("reviews") == TrainingConfig.from_dict(document["config"])
    shown = cli("presets", "show", "reviews")
    assert shown.code == 0 and "TrainingArguments(" in shown.out
