"""`lora-search run --rungs`: one study holds every rung of a multi-fidelity search.

A module fixture runs a rung search through the real command line on an SQLite storage;
the tests read it back with show, export and the summary, resume it, and check that
bad rung options are refused before anything is stored.
"""

from __future__ import annotations

import optuna
import pytest
import yaml

STUDY = "rungs"


@pytest.fixture(scope="module")
def rung_search(tmp_path_factory, tiny_options, cli):
    """Rungs of 16 and 64 examples (the tiny training split holds 96), six trials."""
    folder = tmp_path_factory.mktemp("rungs")
    storage = f"sqlite:///{folder / 'studies.db'}"
    options = [*tiny_options(train_sample=16), "--rungs", "2"]
    result = cli("run", "--space", "quick-experiment", "--trials", 6, "--study", STUDY, "--storage", storage, *options)
    assert result.code == 0, result.err
    return {"storage": storage, "options": options, "first": result}


def load(rung_search) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=rung_search["storage"])


def test_weak_trials_stop_at_the_first_rung_and_the_winner_is_at_the_top(rung_search):
    study = load(rung_search)
    assert study.user_attrs["lora_search.workload"]["rungs"] == 2
    assert study.user_attrs["lora_search.pruner"] == "successive-halving"
    assert study.user_attrs["lora_search.rung_rules"] == 2
    trials = study.get_trials()
    base = trials[0]
    assert base.user_attrs["baseline"] is True
    assert base.state == optuna.trial.TrialState.COMPLETE and base.user_attrs["rung"] == 1  # the baseline always climbs
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "successive halving promotes only the best of the first rung"
    assert all(t.user_attrs["rung"] == 1 and t.user_attrs["rung_examples"] == 64 for t in complete)
    assert all(t.user_attrs["rung"] == 0 and t.user_attrs["rung_examples"] == 16 for t in pruned)
    for trial in complete:  # each rung trained a fresh adapter on its own sample
        passes = trial.user_attrs["proxy.epochs"]
        assert trial.user_attrs["examples_seen"] == pytest.approx((16 + 64) * passes, abs=16)
    assert max(t.user_attrs["examples_seen"] for t in pruned) < min(t.user_attrs["examples_seen"] for t in complete)
    assert study.best_trial.user_attrs["rung"] == 1


def test_progress_and_summary_say_which_rung_and_what_it_saved(rung_search):
    study = load(rung_search)
    err, out = rung_search["first"].err, rung_search["first"].out
    assert "trial 0 (baseline)  eval_loss" in err and "@ rung 1 (64 examples)" in err
    assert "pruned after rung 0 (16 examples)" in err
    assert f"best: trial {study.best_trial.number}, eval_loss {study.best_value:.4g} @ rung 1 (64 examples)" in out
    compute = next(line for line in out.splitlines() if line.startswith("compute: "))
    spent = sum(t.user_attrs["examples_seen"] for t in study.get_trials())
    assert f"{spent:,} training examples in 6 trial(s)" in compute and "saved" in compute
    saved = int(compute.rsplit(": ", 1)[1].split("%")[0])
    assert 0 < saved < 100
    # the training split holds 96 examples: a third rung would reach it
    assert "a search up to the whole training split (96 examples, --rungs 3) would train ~" in out


def test_show_and_export_say_which_rung_a_value_comes_from(rung_search, cli, tmp_path, monkeypatch):
    study = load(rung_search)
    shown = cli("show", STUDY, "--storage", rung_search["storage"])
    assert shown.code == 0, shown.err
    assert "rungs: 16, 64 training examples" in shown.out
    assert f"1. trial {study.best_trial.number}: eval_loss {study.best_value:.4g} @ rung 1 (64 examples)" in shown.out
    monkeypatch.chdir(tmp_path)
    exported = cli("export", STUDY, "--storage", rung_search["storage"], "--name", "climbed")
    assert exported.code == 0, exported.err
    assert "best evaluation at rung 1 (64 examples)" in exported.out
    provenance = yaml.safe_load((tmp_path / "studies" / "presets" / "climbed.yaml").read_text())["provenance"]
    assert provenance["value_source"] == "best evaluation at rung 1 (64 examples)"
    assert provenance["workload"]["rungs"] == 2


def test_export_trial_writes_a_pruned_trial_with_its_value_at_its_rung(rung_search, cli, tmp_path, monkeypatch):
    study = load(rung_search)
    pruned = next(t for t in study.get_trials() if t.state == optuna.trial.TrialState.PRUNED)
    monkeypatch.chdir(tmp_path)
    exported = cli("export", STUDY, "--storage", rung_search["storage"], "--name", "pruned", "--trial", pruned.number)
    assert exported.code == 0, exported.err
    document = yaml.safe_load((tmp_path / "studies" / "presets" / "pruned.yaml").read_text())
    provenance = document["provenance"]
    assert provenance["trial"] == pruned.number and provenance["params"] == pruned.params
    assert provenance["value"] == pruned.user_attrs["rung_values"][-1]["value"] == pruned.intermediate_values[16]
    assert provenance["value_source"] == "best evaluation at rung 0 (16 examples), then pruned"
    assert document["trial_config"]["learning_rate"] == pytest.approx(pruned.params["learning_rate"])


@pytest.mark.parametrize(("options", "fragment"), [
    (["--trial", "99"], "study 'rungs' has no trial 99 (trials 0 to "),
    (["--trial", "1", "--top", "2"], "--trial exports one trial: drop --top"),
])
def test_export_trial_refuses_what_it_cannot_export(rung_search, cli, tmp_path, monkeypatch, options, fragment):
    monkeypatch.chdir(tmp_path)
    result = cli("export", STUDY, "--storage", rung_search["storage"], "--name", "refused", *options)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert fragment in result.err
    assert not (tmp_path / "studies" / "presets").exists()


def test_report_names_the_rungs(rung_search, cli, tmp_path):
    result = cli("report", STUDY, "--storage", rung_search["storage"], "--output", tmp_path / "report.html")
    assert result.code == 0, result.err
    page = (tmp_path / "report.html").read_text()
    assert "at the top rung (64 training examples)" in page and "after each rung (16, 64 training examples)" in page


def test_resume_keeps_the_rungs_and_refuses_others(rung_search, cli):
    storage = rung_search["storage"]
    refused = cli("run", "--study", STUDY, "--storage", storage, "--trials", 9, "--rungs", "3")
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1
    assert "--rungs 2" in refused.err
    before = len(load(rung_search).get_trials())
    resumed = cli("run", "--study", STUDY, "--storage", storage, "--trials", 7, "--quiet")
    assert resumed.code == 0, resumed.err
    trials = load(rung_search).get_trials()
    assert len(trials) == before + 1 and "rung" in trials[-1].user_attrs


def test_too_few_trials_for_a_first_rung_pool_are_warned_of(cli, tiny_options, tmp_path):
    storage = f"sqlite:///{tmp_path / 'few.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 3, "--study", "few", "--storage", storage,
                 *tiny_options(train_sample=16), "--rungs", "2")
    assert result.code == 0, result.err
    assert "of 3 trials only the baseline climbs: ask for more (e.g. --trials 16)" in result.err
    trials = optuna.load_study(study_name="few", storage=storage).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] + [optuna.trial.TrialState.PRUNED] * 2


def test_a_rung_study_from_before_the_current_rules_is_not_resumed(rung_search, cli, tmp_path):
    """Studies made before 2026-11-28 scored every rung on the first rung's validation rows: new
    trials would not compare with theirs, so the resume is refused and the study left as it was."""
    import sqlite3

    old = tmp_path / "old.db"
    with sqlite3.connect(rung_search["storage"].removeprefix("sqlite:///")) as source, sqlite3.connect(old) as copy:
        source.backup(copy)
        copy.execute("DELETE FROM study_user_attributes WHERE key = 'lora_search.rung_rules'")  # what an earlier lora-search stored
    storage = f"sqlite:///{old}"
    before = [(t.number, t.state, t.value) for t in optuna.load_study(study_name=STUDY, storage=storage).get_trials()]
    refused = cli("run", "--study", STUDY, "--storage", storage, "--trials", 9)
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert "earlier lora-search's rules" in refused.err and "--study NEW-NAME" in refused.err
    assert [(t.number, t.state, t.value) for t in optuna.load_study(study_name=STUDY, storage=storage).get_trials()] == before


@pytest.mark.parametrize(("options", "fragment"), [
    (["--rungs", "0"], "workload rungs: must be a positive integer, got 0"),
    (["--rungs", "two"], "invalid int value: 'two'"),
    (["--rungs", "2", "--pruner", "median"], "--rungs promotes trials by successive-halving: drop --pruner median"),
])
def test_bad_rung_options_are_refused_before_anything_is_stored(rung_search, cli, tiny_options, options, fragment):
    storage = rung_search["storage"]
    before = optuna.get_all_study_names(storage)
    result = cli("run", "--space", "quick-experiment", "--study", "refused", "--storage", storage, *tiny_options(), *options)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert fragment in lines[-1]
    assert optuna.get_all_study_names(storage) == before


def test_every_process_opens_the_study_with_the_rung_pruner(tmp_path):
    """What run_plan does in the main process and in each --workers process."""
    from lora_search._loop import SearchPlan

    storage = f"sqlite:///{tmp_path / 'plan.db'}"
    optuna.create_study(study_name="plan", storage=storage)
    plan = SearchPlan(study_name="plan", storage=storage, space="quick-experiment", space_yaml=None, profile={},
                      workload={"rungs": 3}, direction="minimize", sampler="tpe", pruner="successive-halving",
                      sampler_seed=0, target=1, deadline=None)
    pruner = plan.open_study(min_resource=16).pruner
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert (pruner._min_resource, pruner._reduction_factor) == (16, 4)
