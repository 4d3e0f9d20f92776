"""Each sampler is seeded and each pruner runs a study, in both directions."""

from __future__ import annotations

import optuna
import pytest

from lora_search._samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -3, 3)
    choice = trial.suggest_categorical("kind", ["a", "b", "c"])
    for step in range(4):
        trial.report((x - 1) ** 2 + step, step)
    return (x - 1) ** 2 + (choice == "b")


@pytest.mark.parametrize("name", SAMPLERS)
def test_each_sampler_is_seeded(name):
    def params(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=make_sampler(name, seed))
        study.optimize(_quadratic, n_trials=6)
        return [t.params for t in study.trials]

    assert params(7) == params(7)
    assert params(7) != params(8)


@pytest.mark.parametrize("name", PRUNERS)
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_each_pruner_runs_a_study(name, direction):
    study = optuna.create_study(direction=direction, sampler=make_sampler("random", 0), pruner=make_pruner(name, direction))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(1, 5):
            trial.report(x * step if direction == "maximize" else -x * step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=8)
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    if name in ("none", "threshold"):
        assert states == {optuna.trial.TrialState.COMPLETE}


def test_threshold_pruner_stops_a_diverged_trial():
    study = optuna.create_study(pruner=make_pruner("threshold", "minimize"))
    trial = study.ask()
    trial.report(float("nan"), 1)
    assert trial.should_prune()
