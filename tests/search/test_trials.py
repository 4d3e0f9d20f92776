"""Trials the way lora-search counts them: infeasible apart from complete."""

from __future__ import annotations

import optuna

from lora_search._trials import count_states, ranked_trials, trial_outcome

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_trial_outcomes_count_infeasible_apart_from_complete():
    study = optuna.create_study()
    for value, violation in [(1.0, 0.0), (2.0, 3.5), (0.5, -1.0)]:
        trial = study.ask()
        trial.set_constraint("memory", violation)
        study.tell(trial, value)
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    counts = count_states(study.trials)
    assert (counts.complete, counts.infeasible, counts.pruned, counts.failed, counts.finished) == (2, 1, 1, 1, 4)
    assert trial_outcome(study.trials[1]) == "infeasible"
    assert [t.number for t in ranked_trials(study.trials, "minimize")] == [2, 0]
    assert [t.number for t in ranked_trials(study.trials, "maximize")] == [0, 2]
