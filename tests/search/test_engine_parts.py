"""The engine's pieces that need only Optuna: requests, samplers, pruners, names, progress."""

from __future__ import annotations

import io

import optuna
import pytest

from lora_search._engine import PRUNERS, SAMPLERS, RunRequest, default_study_name, make_pruner, make_sampler
from lora_search._errors import SearchError
from lora_search._progress import Progress, format_duration, format_params
from lora_search._trials import count_states, ranked_trials, trial_outcome
from lora_search.objectives._workload import Workload

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("trials", [0, -3, True, 2.5])
def test_a_run_needs_at_least_one_trial(trials):
    with pytest.raises(SearchError, match="--trials"):
        RunRequest(space="standard", trials=trials)


def test_unknown_sampler_and_pruner_are_refused():
    with pytest.raises(SearchError, match="unknown sampler 'grid'.*tpe"):
        RunRequest(space="standard", sampler="grid")
    with pytest.raises(SearchError, match="unknown pruner 'asha'.*median"):
        RunRequest(space="standard", pruner="asha")


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


def test_default_study_name_says_scenario_model_and_data():
    assert default_study_name("memory-constrained", Workload()) == "memory-constrained.minilm.fine-food"
    named = Workload(model="/models/My Tiny-BERT/", data="data/Reviews.2024.csv")
    assert default_study_name("standard", named) == "standard.my-tiny-bert.reviews-2024"


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


def test_progress_writes_one_line_per_trial_without_a_terminal():
    stream = io.StringIO()
    study = optuna.create_study()
    progress = Progress(target=3, metric="eval_loss", direction="minimize", stream=stream)
    progress.start(study)
    study.enqueue_trial({"x": 0.5}, user_attrs={"baseline": True})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[progress])
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("trial 0 (baseline)  eval_loss 0.5")
    assert "1/3 finished" in lines[0] and "2/3 finished" in lines[1]
    assert "\r" not in stream.getvalue()  # no bar redraws into a file


def test_quiet_progress_writes_nothing():
    stream = io.StringIO()
    study = optuna.create_study()
    progress = Progress(target=2, metric="eval_loss", direction="minimize", quiet=True, stream=stream)
    progress.start(study)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[progress])
    progress.close()
    assert stream.getvalue() == ""


def test_progress_bar_counts_and_estimates():
    study = optuna.create_study()
    progress = Progress(target=4, metric="eval_loss", direction="minimize", stream=io.StringIO())
    progress.start(study)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[progress])
    bar = progress.bar()
    assert "2/4" in bar and "complete 2 pruned 0 infeasible 0 failed 0" in bar and "left ~" in bar
    assert progress.remaining_seconds(elapsed=10.0) == pytest.approx(10.0)  # 5 s per trial x 2 to go


def test_formatting_helpers():
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(None) == "?"
    assert format_params({"learning_rate": 0.000512345, "r": 8, "targets": "all-linear"}) == "learning_rate=0.000512 r=8 targets=all-linear"


def test_progress_redraws_a_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    study = optuna.create_study()
    progress = Progress(target=2, metric="eval_loss", direction="minimize", stream=stream)
    progress.start(study)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[progress])
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r\033[K[") and text.endswith("\r\033[K")  # drawn first, cleared last
    assert "\r\033[Ktrial 0  eval_loss" in text and "\r\033[Ktrial 1  eval_loss" in text
    assert "] 2/2  complete 2 pruned 0" in text
