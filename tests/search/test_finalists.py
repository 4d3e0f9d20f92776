"""`lora-search run --finalists K`: the winner is chosen by a second, longer run of the best trials.

A module fixture runs a 5-trial search with two finalists through the real command line
on an SQLite storage; the tests read the stored results back through the summary, show,
studies and export, resume and extend the study, and check the refusals.
"""

from __future__ import annotations

import math

import optuna
import pytest
import yaml

from lora_search._finalists import finalist_numbers

STUDY = "finalists"
ATTR = "lora_search.finalists"


@pytest.fixture(scope="module")
def final_search(tmp_path_factory, tiny_options, cli):
    """Trials on 16 examples; finalists on 64 (4 x 16) and the tiny split's 32 validation rows."""
    folder = tmp_path_factory.mktemp("finalists")
    storage = f"sqlite:///{folder / 'studies.db'}"
    options = tiny_options(train_sample=16)
    result = cli("run", "--space", "quick-experiment", "--trials", 5, "--study", STUDY, "--storage", storage,
                 "--finalists", 2, *options)
    assert result.code == 0, result.err
    return {"storage": storage, "options": options, "first": result, "folder": folder}


def load(final_search) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=final_search["storage"])


def finalist_values(study: optuna.Study) -> dict[int, float]:
    return {int(number): result["value"] for number, result in study.user_attrs[ATTR]["results"].items()}


def test_the_two_best_trials_and_the_baseline_train_again_on_four_times_the_data(final_search):
    study = load(final_search)
    record = study.user_attrs[ATTR]
    assert (record["count"], record["train_examples"], record["eval_examples"]) == (2, 64, 32)
    complete = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    expected = {t.number for t in complete[:2]} | {0}  # the baseline is trial 0
    assert set(finalist_values(study)) == expected
    assert len(study.trials) == 5, "finalists are not trials: they neither count nor feed the sampler"
    for number, result in record["results"].items():
        trial = study.trials[int(number)]
        assert math.isfinite(result["value"]) and result["stop_reason"] in ("completed", "early-stopped")
        epochs = trial.user_attrs["proxy.epochs"]
        if result["stop_reason"] == "completed":  # a longer run than the proxy's, on the larger sample
            assert result["examples_seen"] == pytest.approx(64 * epochs, abs=16)
            assert result["examples_seen"] > trial.user_attrs["examples_seen"]
        assert result["evaluations"][-1]["step"] <= 64 * epochs


def test_the_winner_is_the_best_finalist_everywhere(final_search, cli, tmp_path, monkeypatch):
    study = load(final_search)
    values = finalist_values(study)
    winner = min(values, key=values.get)
    out, err = final_search["first"].out, final_search["first"].err
    count = len(values)  # the two best, and the baseline unless it is one of them
    assert count == 3 - (0 in finalist_numbers(study.trials, "minimize", 2)[:2])
    assert f"finalists: {count} trial(s) train again on 64 examples, scored on 32 validation rows" in err
    assert f"finalist {count}/{count}: trial" in err
    fidelity = "as a finalist (64 examples, 32 validation rows)"
    assert f"best: trial {winner}, eval_loss {values[winner]:.4g} {fidelity}" in out
    assert f"baseline (guide preset, trial 0): eval_loss {values[0]:.4g} {fidelity}" in out
    spent = sum(r["examples_seen"] for r in study.user_attrs[ATTR]["results"].values())
    assert f"finalists: {count} of {count} trained again on 64 examples, scored on 32 validation rows ({spent:,} training examples)" in out
    proxy_best = study.best_trial.number  # optuna's own best: the proxy's
    assert ("the winner is not the proxy's best" in out) == (winner != proxy_best)

    shown = cli("show", STUDY, "--storage", final_search["storage"], "--top", 5)
    assert shown.code == 0, shown.err
    first = next(line for line in shown.out.splitlines() if line.strip().startswith("1. "))
    assert f"trial {winner}: eval_loss {values[winner]:.4g} {fidelity} (proxy" in first

    listed = cli("studies", "--storage", final_search["storage"])
    assert f"{values[winner]:.4g}" in listed.out

    report = cli("report", STUDY, "--storage", final_search["storage"], "--output", tmp_path / "report.html")
    assert report.code == 0, report.err
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Finalists</h2>" in page and f"{values[winner]:.4g}" in page

    monkeypatch.chdir(tmp_path)
    exported = cli("export", STUDY, "--storage", final_search["storage"], "--name", "final-winner")
    assert exported.code == 0, exported.err
    provenance = yaml.safe_load((tmp_path / "studies" / "presets" / "final-winner.yaml").read_text())["provenance"]
    assert provenance["trial"] == winner
    assert provenance["value"] == pytest.approx(values[winner]) and fidelity in provenance["value_source"]
    assert provenance["proxy_value"] == pytest.approx(study.trials[winner].value)
    assert provenance["baseline_value"] == pytest.approx(values[0])


def test_a_rerun_trains_no_finalist_again_and_a_longer_search_only_the_newcomers(final_search, cli):
    storage, options = final_search["storage"], final_search["options"]
    before = load(final_search).user_attrs[ATTR]["results"]
    again = cli("run", "--study", STUDY, "--storage", storage, "--trials", 5)  # the stored count applies
    assert again.code == 0, again.err
    assert "stopped: already done" in again.out and "train again" not in again.err
    assert load(final_search).user_attrs[ATTR]["results"] == before

    longer = cli("run", "--study", STUDY, "--storage", storage, "--trials", 8)
    assert longer.code == 0, longer.err
    study = load(final_search)
    results = study.user_attrs[ATTR]["results"]
    assert all(results[number] == result for number, result in before.items()), "earlier results are kept"
    wanted = finalist_numbers(study.trials, "minimize", 2)
    assert {str(n) for n in wanted} <= set(results)
    newcomers = set(map(str, wanted)) - set(before)
    assert (f"finalists: {len(newcomers)} trial(s) train again" in longer.err) == bool(newcomers)


def test_finalists_zero_lets_the_proxy_choose_again(final_search, cli):
    storage = final_search["storage"]
    proxy = cli("run", "--study", STUDY, "--storage", storage, "--trials", 5, "--finalists", 0)
    assert proxy.code == 0, proxy.err
    study = load(final_search)
    assert study.user_attrs[ATTR]["count"] == 0 and study.user_attrs[ATTR]["results"], "results are kept"
    best = next(line for line in proxy.out.splitlines() if line.startswith("best: "))
    assert best.startswith(f"best: trial {study.best_trial.number}, eval_loss {study.best_value:.4g}")
    assert "finalist" not in best and "finalists:" not in proxy.out
    restored = cli("run", "--study", STUDY, "--storage", storage, "--trials", 5, "--finalists", 2)
    assert restored.code == 0 and "as a finalist" in restored.out


def test_a_search_stopped_by_its_timeout_trains_no_finalist_and_says_so(tmp_path, cli, tiny_options):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 500, "--timeout", "3s", "--study", "short", "--storage",
                 storage, "--finalists", 1, *tiny_options(train_sample=16))
    assert result.code == 0, result.err
    assert "stopped: timeout" in result.out
    assert "finalists: not trained, the search stopped at its timeout with" in result.err
    assert "lora_search.finalists" not in optuna.load_study(study_name="short", storage=storage).user_attrs


@pytest.mark.parametrize("options, fragment", [
    (["--finalists", "-1"], "--finalists must be a whole number >= 0"),
    (["--finalists", "2", "--rungs", "2"], "--rungs already chooses at its top rung"),
])
def test_bad_finalist_options_are_refused_before_anything_is_stored(tmp_path, cli, tiny_options, options, fragment):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 2, "--study", "refused", "--storage", storage,
                 *tiny_options(train_sample=16), *options)
    assert result.code != 0 and fragment in result.err and "Traceback" not in result.err
    assert "refused" not in optuna.get_all_study_names(storage)


def test_a_finalist_that_fails_is_reported_kept_out_and_trained_by_the_next_run(final_search, capsys):
    from lora_search._finalists import run_finalists
    from lora_search._study import stored_space
    from lora_search.objectives import LoraObjective, Workload

    study = optuna.create_study(study_name="failing", storage=final_search["storage"])
    for key, value in load(final_search).user_attrs.items():
        if key != ATTR:
            study.set_user_attr(key, value)
    for trial in load(final_search).trials[:3]:
        study.add_trial(trial)
    objective = LoraObjective(Workload.from_dict(study.user_attrs["lora_search.workload"]))
    embeddings = objective.base_model.bert.embeddings

    def broken_batch(module, args):
        if module.training:
            raise ValueError("broken batch")

    handle = embeddings.register_forward_pre_hook(broken_batch)
    try:
        run_finalists(study, objective, stored_space(study), 1)
    finally:
        handle.remove()
    err = capsys.readouterr().err
    assert "failed (ValueError: broken batch); run the same command again to retry it" in err
    record = optuna.load_study(study_name="failing", storage=final_search["storage"]).user_attrs[ATTR]
    assert record["count"] == 1 and record["results"] == {}

    run_finalists(study, objective, stored_space(study), 1)
    wanted = finalist_numbers(study.trials, "minimize", 1)
    results = optuna.load_study(study_name="failing", storage=final_search["storage"]).user_attrs[ATTR]["results"]
    assert set(results) == {str(n) for n in wanted} and all(math.isfinite(r["value"]) for r in results.values())
