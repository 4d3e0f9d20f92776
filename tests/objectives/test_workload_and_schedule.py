"""Workload validation and round trip; the shared evaluation grid of proxy trials."""

from __future__ import annotations

import json

import pytest

from lora_search.objectives import DataError, ProxySchedule, Workload, metric_direction


def test_workload_round_trips_through_json():
    workload = Workload(model="org/model", data="reviews.csv", train_sample=64, metric="f1", memory_budget_gb=6.0, torch_threads=2)
    assert Workload.from_dict(json.loads(json.dumps(workload.to_dict()))) == workload


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train_sample": 0}, "^--train-sample: must be a positive integer"),
        ({"evaluations_per_trial": 0}, "^--evaluations: must be a positive integer"),
        ({"metric": "bleu"}, "unknown metric 'bleu'"),
        ({"task": "regression"}, "^--task: must be one of"),
        ({"task": "causal-lm", "metric": "accuracy"}, "does not apply to causal-lm"),
        ({"prompt_column": "question"}, "give --prompt-column and --response-column together"),
        ({"memory_budget_gb": -1}, "^--memory-budget: must be a positive number of GB"),
        ({"quantization": "2bit"}, "^--quantize: must be one of 4bit, 8bit"),
        ({"torch_threads": 0}, "^--threads: must be a positive integer"),
        ({"seed": -1}, r"^--seed: must be an integer from 0 to 4294967295 \(2\*\*32 - 1\), got -1"),
        ({"seed": 2**32}, "seed: must be an integer from 0 to 4294967295"),
    ],
)
def test_invalid_workloads_say_what_to_fix(changes, message):
    with pytest.raises(DataError, match=message):
        Workload(**changes)


def test_unknown_workload_key_is_named():
    with pytest.raises(DataError, match="unknown setting 'batch'"):
        Workload.from_dict({"batch": 3})


def test_metric_directions():
    assert [metric_direction(m) for m in ("eval_loss", "accuracy", "f1", "perplexity")] == ["minimize", "maximize", "maximize", "minimize"]


@pytest.mark.parametrize("epochs", [1, 2, 2.5, 3, 4, 5, 8])
@pytest.mark.parametrize("batch", [(2, 4), (3, 8), (4, 6), (16, 1)])
def test_report_steps_lie_on_one_grid_shared_by_all_trials(epochs, batch):
    schedule = ProxySchedule.plan(128, epochs, *batch, evaluations_per_trial=4)
    steps = schedule.report_steps()
    assert steps == sorted(set(steps)) and steps[-1] == round(128 * epochs)
    # The interval is the sample times a power of two: all grids nest into the finest.
    finest = ProxySchedule.plan(128, 1, 2, 4, evaluations_per_trial=8).interval
    assert all(step % finest == 0 for step in steps if step != round(128 * epochs) or (128 * epochs) % finest == 0)
    # Neither far more nor far fewer evaluations than asked for.
    assert 2 <= len(steps) <= 6


def test_trials_with_different_epochs_and_batches_share_report_steps():
    three = ProxySchedule.plan(128, 3, 2, 8, evaluations_per_trial=4).report_steps()
    five = ProxySchedule.plan(128, 5, 4, 6, evaluations_per_trial=4).report_steps()
    assert three == [128, 256, 384]
    assert five[:3] == three


def test_last_grid_point_reached_rounds_down_to_the_grid():
    schedule = ProxySchedule.plan(100, 2, 8, 1, evaluations_per_trial=4)  # interval 50
    assert [schedule.last_grid_point_reached(seen) for seen in (0, 49, 50, 56, 104, 200)] == [None, None, 50, 50, 100, 200]
    assert schedule.optimizer_steps == 26  # ceil(100 / 8) = 13 batches per epoch x 2
