"""Causal LM on a tiny GPT-2: prompt/response and plain-text training."""

from __future__ import annotations

import math

import optuna
import pytest

from lora_search.objectives import LoraObjective, Workload

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
