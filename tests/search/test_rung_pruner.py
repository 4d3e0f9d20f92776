"""The data rungs' successive halving: the first rung promotes only against a full pool."""

from __future__ import annotations

import optuna
import pytest

from lora_search._rung_pruner import DataRungPruner
from lora_search._samplers import make_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)

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
        study.tell(trial, value) if rungs == len(RUNGS) else study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        reached.append(rungs)
    return reached


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_first_trials_stop_at_the_first_rung_whatever_their_value(direction):
    better = (lambda k: 1.0 - k / 100) if direction == "minimize" else (lambda k: k / 100)
    study = optuna.create_study(direction=direction, pruner=DataRungPruner(first_rung=RUNGS[0], reduction_factor=4))
    # every trial is the best so far: optuna's own rule promotes each while the pool is small
    reached = climb(study, [better(k) for k in range(8)])
    assert reached[:3] == [1, 1, 1], "promoted with fewer than 4 values at the first rung"
    assert reached[3] >= 2, "the fourth trial, the best of a full pool, climbs"
    assert all(rungs >= 2 for rungs in reached[3:])

    plain = optuna.create_study(direction=direction, pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=RUNGS[0], reduction_factor=4))
    assert climb(plain, [better(k) for k in range(3)])[:3] != [1, 1, 1], "the rule this pruner exists to change"


def test_from_a_full_pool_only_the_best_quarter_climbs_and_higher_rungs_keep_optunas_rule():
    study = optuna.create_study(pruner=DataRungPruner(first_rung=RUNGS[0], reduction_factor=4))
    assert climb(study, [0.5, 0.6, 0.7, 0.8]) == [1, 1, 1, 1]  # 0.8 is not the best of a pool of 4
    # at the first rung 0.3 is the best of 5 and 0.32 one of the best 2 of 9: both climb, 0.35
    # and 0.55 do not. Above the first rung the pool is only the promoted trials, and the
    # first value there (the baseline's, in a search) is enough to compare with: 0.3 is the
    # best so far at the second rung and climbs on, 0.32 is not and stops.
    assert climb(study, [0.3, 0.35, 0.55, 0.32]) == [3, 1, 1, 2]


def test_make_pruner_uses_it_for_data_rungs_only():
    assert type(make_pruner("successive-halving", "minimize", 128, rung_factor=4)) is DataRungPruner
    plain = make_pruner("successive-halving", "minimize", 128)
    assert type(plain) is optuna.pruners.SuccessiveHalvingPruner and plain._reduction_factor == 3
