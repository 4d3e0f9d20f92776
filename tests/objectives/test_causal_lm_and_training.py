"""Causal LM on a tiny GPT-2, full training with a preset, and memory across many trials."""

from __future__ import annotations

import gc
import json
import math

import optuna
import pytest
import torch

from lora_search.objectives import LoraObjective, Workload, train_with_preset

optuna.logging.set_verbosity(optuna.logging.WARNING)


def one_trial(objective, config):
    study = optuna.create_study(direction=objective.direction, pruner=optuna.pruners.NopPruner())
    study.optimize(lambda trial: objective(trial, config), n_trials=1)
    return study.trials[0]


def test_prompt_response_causal_lm_scores_perplexity(tiny_gpt2, qa_jsonl, good_config):
    workload = Workload(model=tiny_gpt2, data=qa_jsonl, prompt_column="prompt", response_column="response", metric="perplexity",
                        train_sample=48, eval_sample=16, max_length=24, torch_threads=1)
    objective = LoraObjective(workload)
    assert objective.task == "causal-lm" and objective.direction == "minimize"
    # Prompt tokens are masked out of the loss.
    assert objective.train_rows[0]["labels"][0] == -100 and objective.train_rows[0]["labels"][-1] != -100
    trial = one_trial(objective, good_config.replace(num_train_epochs=2, learning_rate=3e-2))
    assert trial.user_attrs["stop_reason"] == "completed"
    values = [e["value"] for e in trial.user_attrs["evaluations"]]
    assert values[-1] < values[0]
    assert trial.value == pytest.approx(math.exp(min(e["eval_loss"] for e in trial.user_attrs["evaluations"])), rel=1e-4)


def test_text_column_causal_lm_is_inferred(tiny_gpt2, tmp_path, good_config):
    import pandas

    path = tmp_path / "lines.parquet"
    pandas.DataFrame({"text": ["the tea was good", "this snack is bad", "a very fresh coffee"] * 10}).to_parquet(path)
    objective = LoraObjective(Workload(model=tiny_gpt2, data=str(path), train_sample=16, eval_sample=6, max_length=12))
    assert objective.task == "causal-lm" and objective.workload.metric == "eval_loss"
    assert math.isfinite(one_trial(objective, good_config.replace(num_train_epochs=1)).value)


def test_train_with_preset_saves_a_loadable_adapter(tiny_bert, sentiment_csv, good_config, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    workload = Workload(model=tiny_bert, data=sentiment_csv, max_length=16, torch_threads=1)
    config = good_config.replace(num_train_epochs=2, eval_steps=12, save_steps=12, early_stopping_patience=2)
    metrics = train_with_preset(workload, config, tmp_path, progress=False)
    assert metrics["eval_accuracy"] > 0.8
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["metrics"] == metrics and record["train_examples"] == 192  # 240 rows less a 20% hold-out
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert isinstance(PeftModel.from_pretrained(base, tmp_path / "adapter"), PeftModel)


def footprint(objective) -> tuple[int, int, int]:
    """(live tensors, live modules, hooks on the base model) after a full collection."""
    import warnings

    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # isinstance probes deprecated torch attributes
        objects = gc.get_objects()
        tensors = sum(1 for item in objects if isinstance(item, torch.Tensor))
        modules = sum(1 for item in objects if isinstance(item, torch.nn.Module))
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in objective.base_model.modules())
    return tensors, modules, hooks


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def test_nothing_grows_across_trials(tiny_objective, good_config):
    config = good_config.replace(num_train_epochs=0.5)
    study = optuna.create_study(direction="minimize")
    study.optimize(lambda trial: tiny_objective(trial, config), n_trials=2)
    after_two, rss_after_two = footprint(tiny_objective), resident_mb()
    study.optimize(lambda trial: tiny_objective(trial, config), n_trials=18)
    assert footprint(tiny_objective) == after_two
    assert resident_mb() - rss_after_two < 30  # MB; one tiny-model trial allocates about 15
