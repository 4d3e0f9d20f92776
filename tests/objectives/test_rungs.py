"""Data rungs: a config trained again on RUNG_FACTOR^k times the proxy's examples and validation rows."""

from __future__ import annotations

import optuna
import pytest

from lora_search.objectives import RUNG_FACTOR, DataError, LoraObjective, Workload, rung_sizes
from lora_search.objectives._objective import RUNG_EVALUATIONS_PER_EPOCH

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.mark.parametrize(("first", "rungs", "available", "sizes"), [
    (64, 1, 1000, [64]),
    (64, 3, 2000, [64, 256, 1024]),
    (64, 3, 1000, [64, 256, 1000]),  # the top rung is capped at the training split
    (64, 4, 200, [64, 200]),  # a rung that would add no data is left out
    (64, 2, 50, [50]),
])
def test_rungs_grow_by_the_factor_up_to_the_training_split(first, rungs, available, sizes):
    assert RUNG_FACTOR == 4
    assert rung_sizes(first, rungs, available) == sizes


@pytest.mark.parametrize("rungs", [0, -1, 1.5, True])
def test_rungs_must_be_a_positive_whole_number(rungs):
    with pytest.raises(DataError, match="rungs"):
        Workload(rungs=rungs)


@pytest.fixture(scope="module")
def rung_objective(tiny_workload):
    return LoraObjective(tiny_workload.replace(train_sample=32, rungs=2))


def test_a_rung_trains_a_fresh_adapter_on_four_times_the_data_scored_on_four_times_the_rows(rung_objective, tiny_workload,
                                                                                            good_config):
    objective = rung_objective
    assert objective.rung_examples == [32, 128]
    validation = len(objective.data.eval)
    assert validation > 32 and objective.rung_fidelity(1) == (128, min(32 * RUNG_FACTOR, validation))
    # 4^2 x 32 training examples capped at the split's 144
    assert objective.rung_fidelity(2) == (144, validation)
    result = objective.train_at_rung(good_config, 1)
    epochs = good_config.num_train_epochs
    assert result["stop_reason"] == "completed"
    assert result["examples_seen"] == 128 * epochs  # all of its epochs, unpruned
    values = [evaluation["value"] for evaluation in result["evaluations"]]
    assert result["evaluations"][-1]["step"] == 128 * epochs and result["value"] == min(values)
    assert result["best_step"] == result["evaluations"][values.index(min(values))]["step"]
    study = optuna.create_study(direction="minimize")
    study.optimize(lambda trial: objective(trial, good_config), n_trials=1)
    attrs = study.trials[0].user_attrs
    assert attrs["examples_seen"] == 32 * epochs and attrs["proxy.eval_examples"] == 32, "a trial is rung 0 only"
    assert attrs["value_source"] == "best evaluation" and "rung_values" not in attrs

    over_budget = LoraObjective(tiny_workload.replace(memory_budget_gb=0.01)).train_at_rung(good_config, 1)
    assert over_budget["value"] is None and over_budget["stop_reason"] == "infeasible:over-budget"
    assert over_budget["examples_seen"] == 0


@pytest.mark.parametrize(("eval_steps", "per_epoch"), [(3, 4), (6, 4), (9, 2), (18, 1)])
def test_a_rung_evaluates_as_often_per_epoch_as_the_full_run(rung_objective, good_config, eval_steps, per_epoch):
    """The full run: 144 training examples at 8 per step are 18 steps per epoch, evaluated
    every 3, 6, 9 or 18 steps: 6, 3, 2 or 1 times per epoch. The rung evaluates at most 4
    times per epoch, on halvings of a pass over its 128 examples (nearest in log scale):
    4 (capped), 4 (3 lies nearer 4 than 2), 2 and 1."""
    assert RUNG_EVALUATIONS_PER_EPOCH == 4
    assert rung_objective.dataset_size == 144
    config = good_config.replace(num_train_epochs=2, gradient_accumulation_steps=1, eval_strategy="steps", eval_steps=eval_steps)
    result = rung_objective.train_at_rung(config, 1)
    assert [e["step"] for e in result["evaluations"]] == [round(128 * (i + 1) / per_epoch) for i in range(2 * per_epoch)]


@pytest.mark.parametrize(("patience", "rung_patience"), [(6, 4), (12, 8), (7, 5), (0, 0)])
def test_a_rungs_patience_spans_as_much_of_an_epoch_as_the_full_runs(rung_objective, good_config, patience, rung_patience):
    """The full run evaluates every 3 of its 18 steps per epoch (6 per epoch), the rung 4 times
    per epoch: a patience of 6 (one epoch) is 4 rung evaluations, 12 is 8, 7 rounds up to 5.
    At a learning rate that changes nothing, no evaluation gains the threshold on the first,
    so the rung stops that many evaluations after it (3 epochs: 12 evaluations planned)."""
    config = good_config.replace(num_train_epochs=3, gradient_accumulation_steps=1, eval_strategy="steps", eval_steps=3,
                                 learning_rate=1e-9, early_stopping_patience=patience, early_stopping_threshold=0.01)
    result = rung_objective.train_at_rung(config, 1)
    stopped = patience > 0
    assert len(result["evaluations"]) == (1 + rung_patience if stopped else 12)
    assert result["stop_reason"] == ("early-stopped" if stopped else "completed")


def test_a_baseline_that_learns_nothing_at_the_first_rung_says_how_to_raise_it(rung_objective, good_config):
    study = optuna.create_study(direction=rung_objective.direction)
    study.enqueue_trial({}, user_attrs={"baseline": True})
    study.optimize(lambda trial: rung_objective(trial, good_config.replace(learning_rate=1e-9)), n_trials=1)
    warning = study.trials[0].user_attrs["first_rung_warning"]
    assert warning.startswith("the first rung (32 training examples) learns nothing measurable")
    assert "--train-sample 128" in warning
    assert "--eval-sample" not in warning  # it scores as many rows (32) as it trains on


@pytest.mark.parametrize(("baseline_learning_rate", "warned"), [(1e-9, True), (1e-2, False)])
def test_without_rungs_the_proxy_is_checked_for_signal_too(tiny_objective, good_config, baseline_learning_rate, warned):
    """The proxy of a single-fidelity study is its only rung: a baseline that learns nothing there says so."""
    study = optuna.create_study(direction=tiny_objective.direction)
    study.enqueue_trial({}, user_attrs={"baseline": True})
    study.optimize(lambda trial: tiny_objective(trial, good_config.replace(learning_rate=baseline_learning_rate)), n_trials=1)
    warning = study.trials[0].user_attrs.get("first_rung_warning")
    assert (warning is not None) is warned
    if warned:
        assert warning.startswith("the proxy (64 training examples) learns nothing measurable")
        # it scores 32 of the split's 48 validation rows, fewer than the 64 it trains on
        assert "(32 validation rows scored)" in warning
        assert warning.endswith("a new study with e.g. --eval-sample 48 --train-sample 256")


@pytest.mark.parametrize(
    ("value", "direction", "without_signal"),
    [(0.65, "minimize", True), (0.66, "minimize", True), (0.69, "minimize", True),  # 0.69: worse than untrained
     (0.60, "minimize", False), (0.75, "maximize", False), (0.66, "maximize", True)],
)
def test_a_first_rung_without_signal_is_one_that_does_not_beat_untrained_by_more_than_the_noise(value, direction, without_signal):
    from lora_search.objectives._objective import first_rung_without_signal

    assert first_rung_without_signal(value, 0.666, 0.02, direction) is without_signal


def test_metric_noise_is_one_seed_of_noise_on_the_evaluation_rows():
    from lora_search.objectives._workload import metric_noise

    assert metric_noise("accuracy", 0.7, 100) == pytest.approx(0.05)  # binomial, at its widest
    assert metric_noise("eval_loss", 0.69, 128) == pytest.approx(0.0091, abs=1e-4)
    assert metric_noise("perplexity", 2.0, 128) == pytest.approx(2.0 * metric_noise("eval_loss", 0.6931, 128), rel=1e-3)
