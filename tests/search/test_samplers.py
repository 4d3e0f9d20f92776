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


# --- successive halving over the data rungs of --rungs ---------------------------------

RUNGS = (16, 64, 256)  # a first rung of 16 examples, x4 per rung


def climb(study: optuna.Study, values: list[float]) -> list[int]:
    """Run one trial per value through the rungs as the objective does (the same value at every
    rung: an ordering that holds); the number of rungs each trial reached."""
    reached = []
    for value in values:
        trial = study.ask()
        rungs = 0
        for size in RUNGS:
            trial.report(value, size)
            rungs += 1
            if size != RUNGS[-1] and trial.should_prune():
                break
        if rungs == len(RUNGS):
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        reached.append(rungs)
    return reached


def rung_study(direction: str = "minimize") -> optuna.Study:
    return optuna.create_study(direction=direction, pruner=make_pruner("successive-halving", direction, RUNGS[0], rung_factor=4))


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_a_rung_promotes_nobody_until_it_holds_four_values(direction):
    better = (lambda k: 1.0 - k / 100) if direction == "minimize" else (lambda k: k / 100)
    # every trial is the best so far, which optuna's default promotes while a rung holds fewer than 4
    reached = climb(rung_study(direction), [better(k) for k in range(8)])
    assert reached == [1, 1, 1, 2, 2, 2, 3, 3]
    plain = optuna.create_study(direction=direction, pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=RUNGS[0], reduction_factor=4))
    assert climb(plain, [better(0)]) == [3], "the rule the rung pruner exists to change"


def test_from_four_values_on_a_rung_promotes_its_best_quarter():
    study = rung_study()
    assert climb(study, [0.5, 0.6, 0.7, 0.8]) == [1, 1, 1, 1]  # 0.8 is not the best of 4
    # first rung: 0.3 is the best of 5 and 0.32 one of the best 2 of 8; 0.35 and 0.55 are neither.
    # The second rung then holds 1 and 2 values: too few to promote from.
    assert climb(study, [0.3, 0.35, 0.55, 0.32]) == [2, 1, 1, 2]
    # the second rung's 3rd value stops there too; from the 4th on its best quarter climbs
    assert climb(study, [0.2, 0.25, 0.1]) == [2, 2, 3]


def test_the_rung_pruner_is_for_data_rungs_only():
    rungs = make_pruner("successive-halving", "minimize", 128, rung_factor=4)
    assert (rungs._min_resource, rungs._reduction_factor, rungs._bootstrap_count) == (128, 4, 3)
    plain = make_pruner("successive-halving", "minimize", 128)
    assert (plain._reduction_factor, plain._bootstrap_count) == (3, 0)
