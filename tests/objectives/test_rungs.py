"""Multi-fidelity trials: rungs of training data, climbed under successive halving."""

from __future__ import annotations

import optuna
import pytest

from lora_search.objectives import RUNG_FACTOR, DataError, LoraObjective, Workload, rung_sizes

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


def test_a_weak_trial_is_pruned_at_the_first_rung_a_strong_one_climbs(rung_objective, good_config, bad_config):
    objective = rung_objective
    assert objective.rung_examples == [32, 128]
    assert [len(rows) for rows in objective.rung_rows] == [32, 128]
    # each rung is scored on RUNG_FACTOR times the validation rows of the one before, capped at the split
    validation = len(objective.data.eval)
    assert validation > 32 and [len(rows) for rows in objective.rung_eval_rows] == [32, min(32 * RUNG_FACTOR, validation)]
    assert objective.eval_rows is objective.rung_eval_rows[0]
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=32, reduction_factor=RUNG_FACTOR)
    study = optuna.create_study(direction=objective.direction, pruner=pruner)
    # the baseline is a config that learns nothing: it climbs all the same
    baseline = good_config.replace(learning_rate=1e-9)
    study.enqueue_trial({}, user_attrs={"baseline": True})
    configs = [baseline, good_config, bad_config]
    study.optimize(lambda trial: objective(trial, configs[trial.number]), n_trials=3)
    base, good, bad = study.trials
    epochs = good_config.num_train_epochs

    for trial in (base, good):
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs["rung"] == 1 and trial.user_attrs["rung_examples"] == 128
        assert [r["examples"] for r in trial.user_attrs["rung_values"]] == [32, 128]
        assert [r["eval_examples"] for r in trial.user_attrs["rung_values"]] == [len(rows) for rows in objective.rung_eval_rows]
        assert trial.value == trial.user_attrs["rung_values"][-1]["value"]
        assert sorted(trial.intermediate_values) == [32, 128]
        assert trial.user_attrs["examples_seen"] == (32 + 128) * epochs  # a fresh adapter on each rung's sample
        assert trial.user_attrs["value_source"] == "best evaluation at rung 1 (128 examples)"
        assert {e["rung"] for e in trial.user_attrs["evaluations"]} == {0, 1}
    assert good.value < base.value

    assert bad.state == optuna.trial.TrialState.PRUNED
    assert bad.user_attrs["stop_reason"] == "pruned"
    assert bad.user_attrs["rung"] == 0 and bad.user_attrs["rung_examples"] == 32
    assert bad.user_attrs["examples_seen"] == 32 * epochs
    assert bad.value == bad.user_attrs["rung_values"][0]["value"]  # Optuna keeps the last reported value
    assert study.best_trial.number == good.number
    # the baseline learned nothing at the first rung: it says so and how to raise that rung
    assert base.user_attrs["first_rung_warning"].startswith("the first rung (32 training examples) learns nothing measurable")
    assert "--train-sample 128" in base.user_attrs["first_rung_warning"]
    assert "first_rung_warning" not in good.user_attrs


def test_one_rung_is_the_single_fidelity_trial(tiny_objective, good_config):
    assert tiny_objective.rung_examples == [64]
    study = optuna.create_study(direction="minimize")
    study.optimize(lambda trial: tiny_objective(trial, good_config), n_trials=1)
    attrs = study.trials[0].user_attrs
    assert "rung" not in attrs and "rung_values" not in attrs
    assert attrs["value_source"] == "best evaluation"
    assert sorted(study.trials[0].intermediate_values) == [64, 128, 192, 256]


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
        assert "--train-sample 256" in warning


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
