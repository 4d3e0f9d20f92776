"""`lora-search run --rungs`: successive halving over whole data rungs, after the search.

A module fixture runs a 12-trial search with 3 rungs (16, 64 and the tiny split's 96
examples) through the real command line on an SQLite storage; the tests read the stored
rungs back through the summary, show, studies, report and export, resume and extend the
study, and check the refusals.
"""

from __future__ import annotations

import math

import optuna
import pytest
import yaml

STUDY = "rungs"
ATTR = "lora_search.rung_results"


@pytest.fixture(scope="module")
def rung_search(tmp_path_factory, tiny_options, cli):
    """Trials on 16 examples and 32 validation rows; rung 1 on 64, rung 2 on all 96 (both on the split's 32 rows)."""
    folder = tmp_path_factory.mktemp("rungs")
    storage = f"sqlite:///{folder / 'studies.db'}"
    options = [*tiny_options(train_sample=16), "--rungs", "3"]
    result = cli("run", "--space", "quick-experiment", "--trials", 12, "--study", STUDY, "--storage", storage, *options)
    assert result.code == 0, result.err
    return {"storage": storage, "options": options, "first": result}


def load(rung_search) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=rung_search["storage"])


def values_at(study: optuna.Study, rung: int) -> dict[int, float]:
    """Trial number -> its value at ``rung`` (1 or more), for the configs trained there."""
    results = study.user_attrs[ATTR]["rungs"][rung - 1]["results"]
    return {int(number): result["value"] for number, result in results.items()}


def best(values: dict[int, float], count: int) -> list[int]:
    return sorted(values, key=values.get)[:count]


def test_the_best_quarter_trains_again_on_four_times_the_data_and_the_best_of_it_with_the_baseline_at_the_top(rung_search):
    study = load(rung_search)
    assert study.user_attrs["lora_search.rung_rules"] == 5
    rungs = study.user_attrs[ATTR]["rungs"]
    assert [(r["rung"], r["train_examples"], r["eval_examples"]) for r in rungs] == [(1, 64, 32), (2, 96, 32)]
    assert len(study.trials) == 12, "rungs are not trials: they neither count nor feed the sampler"
    searched = [t for t in study.trials if not t.user_attrs.get("baseline")]
    assert study.trials[0].user_attrs["baseline"] and all(t.state.is_finished() for t in searched)
    complete = {t.number: t.value for t in searched if t.state == optuna.trial.TrialState.COMPLETE}
    # rung 1: the best quarter of the 11 searched trials (3), pruned ones counting as losers; rung 2,
    # the top: the best of those 3 alone; the baseline (trial 0) at the top rung only
    first = best(complete, 3)
    assert set(values_at(study, 1)) == set(first)
    assert set(values_at(study, 2)) == {*best({n: values_at(study, 1)[n] for n in first}, 1), 0}
    for rung in rungs:
        for number, result in rung["results"].items():
            trial = study.trials[int(number)]
            assert math.isfinite(result["value"]) and result["stop_reason"] in ("completed", "early-stopped")
            if result["stop_reason"] == "completed":  # the trial's epochs over the rung's larger sample
                assert result["examples_seen"] == pytest.approx(rung["train_examples"] * trial.user_attrs["proxy.epochs"], abs=16)


def test_the_winner_is_the_best_at_the_top_rung_everywhere(rung_search, cli, tmp_path, monkeypatch):
    study = load(rung_search)
    top = values_at(study, 2)
    winner = min(top, key=top.get)
    out, err = rung_search["first"].out, rung_search["first"].err
    assert "rung 1: 3 of 3 config(s) train on 64 examples, scored on 32 validation rows" in err
    assert "rung 2: 2 of 2 config(s) train on 96 examples, scored on 32 validation rows" in err
    assert "  rung 2 2/2: trial 0 (baseline)  eval_loss" in err and f"(rung 0 {study.trials[0].value:.4g}, " in err
    fidelity = "at rung 2 (96 examples, 32 validation rows)"
    assert f"best: trial {winner}, eval_loss {top[winner]:.4g} {fidelity}" in out
    assert f"baseline (guide preset, trial 0): eval_loss {top[0]:.4g} {fidelity}" in out
    assert "rung 1: 3 of 3 config(s) trained on 64 examples" in out and "still to train" not in out

    shown = cli("show", STUDY, "--storage", rung_search["storage"], "--top", 12)
    assert shown.code == 0, shown.err
    assert "rungs: 16, 64, 96 training examples" in shown.out
    first = next(line for line in shown.out.splitlines() if line.strip().startswith("1. "))
    # the rungs it climbed by: the baseline (trial 0) skipped rung 1
    below = f", rung 1 {values_at(study, 1)[winner]:.4g}" if winner else ""
    assert f"trial {winner}: eval_loss {top[winner]:.4g} {fidelity} (rung 0 {study.trials[winner].value:.4g}{below})" in first
    # then the rest of rung 2, then rung 1's, then the proxy's values
    order = [int(line.split("trial ")[1].split(":")[0]) for line in shown.out.splitlines() if line.strip()[:1].isdigit()]
    at_rung1 = values_at(study, 1)
    rung1_only = sorted((n for n in at_rung1 if n not in top), key=at_rung1.get)
    assert order[:len(top)] == sorted(top, key=top.get) and order[len(top):len(top) + len(rung1_only)] == rung1_only

    listed = cli("studies", "--storage", rung_search["storage"])
    assert f"{top[winner]:.4g} (rung 2)" in listed.out

    report = cli("report", STUDY, "--storage", rung_search["storage"], "--output", tmp_path / "report.html")
    assert report.code == 0, report.err
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Rungs</h2>" in page and "at rung 2 (96 examples)" in page and f"{top[winner]:.4g}" in page

    monkeypatch.chdir(tmp_path)
    exported = cli("export", STUDY, "--storage", rung_search["storage"], "--name", "climbed")
    assert exported.code == 0, exported.err
    provenance = yaml.safe_load((tmp_path / "studies" / "presets" / "climbed.yaml").read_text())["provenance"]
    assert provenance["trial"] == winner and provenance["workload"]["rungs"] == 3
    assert provenance["value"] == pytest.approx(top[winner]) and provenance["value_source"] == f"best evaluation {fidelity}"
    assert provenance["baseline_value"] == pytest.approx(top[0])


def test_exporting_the_baseline_writes_the_guide_preset_fitted_to_the_data(rung_search, cli, tmp_path, monkeypatch):
    from lora_search.spaces import RunProfile, get_preset, rederive_for_dataset

    monkeypatch.chdir(tmp_path)
    exported = cli("export", STUDY, "--storage", rung_search["storage"], "--name", "base", "--trial", 0)
    assert exported.code == 0, exported.err
    assert ("note: trial 0 is the baseline, the guide preset 'quick-experiment' fitted to the data; "
            "lora-search train --preset quick-experiment --fit-to-data trains the same") in exported.err
    # what `train --preset quick-experiment --fit-to-data` trains on this data, outside the space's 32-64 per step
    document = yaml.safe_load((tmp_path / "studies" / "presets" / "base.yaml").read_text())
    fitted = rederive_for_dataset(get_preset("quick-experiment"), RunProfile(**load(rung_search).user_attrs["lora_search.profile"]))[0]
    assert document["config"] == document["trial_config"] == fitted.to_dict() and fitted.effective_batch_size == 16
    assert document["rederived"] == {} and document["provenance"]["baseline_fitted"] is True
    other = next(t.number for t in load(rung_search).trials if t.number and t.state == optuna.trial.TrialState.COMPLETE)
    searched = cli("export", STUDY, "--storage", rung_search["storage"], "--name", "searched", "--trial", other)
    assert searched.code == 0 and "is the baseline" not in searched.err


def test_the_summary_says_what_the_rungs_saved(rung_search):
    study = load(rung_search)
    out = rung_search["first"].out
    results = [r for rung in study.user_attrs[ATTR]["rungs"] for r in rung["results"].values()]
    spent = sum(t.user_attrs["examples_seen"] for t in study.trials) + sum(r["examples_seen"] for r in results)
    in_full = sum(t.user_attrs["proxy.epochs"] * 96 for t in study.trials)  # each trial's epochs over the top rung's 96
    as_pruned = sum(t.user_attrs["examples_seen"] * 96 / 16 for t in study.trials)  # stopped where the proxy stopped
    assert as_pruned < in_full, "the percentile pruner stopped some trials"
    compute = next(line for line in out.splitlines() if line.startswith("compute: "))
    assert compute == (f"compute: {spent:,} training examples in 12 trial(s) and their rungs; every trial trained in full at the "
                       f"top rung (96 examples) would train ~{in_full:,.0f}: {1 - spent / in_full:.0%} saved "
                       f"({1 - spent / as_pruned:.0%} against the top rung with the trials pruned where they were)")
    assert "a search up to the whole training split" not in out  # the top rung holds it already


def test_a_rerun_trains_nothing_again_and_a_longer_search_only_the_newcomers(rung_search, cli):
    storage = rung_search["storage"]
    before = load(rung_search).user_attrs[ATTR]["rungs"]
    again = cli("run", "--study", STUDY, "--storage", storage, "--trials", 12)
    assert again.code == 0, again.err
    assert "stopped: already done" in again.out and "config(s) train on" not in again.err
    assert load(rung_search).user_attrs[ATTR]["rungs"] == before

    longer = cli("run", "--study", STUDY, "--storage", storage, "--trials", 16)
    assert longer.code == 0, longer.err
    study = load(rung_search)
    for old, new in zip(before, study.user_attrs[ATTR]["rungs"]):
        assert all(new["results"][number] == result for number, result in old["results"].items()), "earlier results are kept"
    complete = {t.number: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.number}
    wanted = set(best(complete, 4))  # 15 searched trials: a quarter is 4
    assert wanted <= set(values_at(study, 1)) and 0 not in values_at(study, 1)
    newcomers = wanted - {int(n) for n in before[0]["results"]}
    assert (f"rung 1: {len(newcomers)} of 4 config(s) train on" in longer.err) == bool(newcomers)


def test_the_cost_of_rungs_up_to_the_whole_split_counts_the_baseline_once_at_the_top(rung_search):
    """The summary's estimate for a split larger than the top rung: the configs stored rung 1
    trained, above it a quarter (at least 2) of the rung below, at the new top the best one and
    the baseline."""
    from lora_search._rungs import full_split_compute, rung_notes

    study = load(rung_search)
    rungs = study.user_attrs[ATTR]["rungs"]
    results = [r for rung in rungs for r in rung["results"].values()]
    passes = sum(r["examples_seen"] for r in results) / sum(rung["train_examples"] * len(rung["results"]) for rung in rungs)
    # 16 x 4^k up to 1,000 rows: 16, 64, 256, 1,000; stored rung 1's searched configs train at 64, a
    # quarter of them (at least 2) at 256, the best of those and the baseline (trial 0) at 1,000
    first = sum(number != "0" for number in rungs[0]["results"])
    assert "0" in rungs[1]["results"] and "0" not in rungs[0]["results"]
    expected = sum(t.user_attrs["examples_seen"] for t in study.trials) + passes * (
        first * 64 + max(2, math.ceil(first / 4)) * 256 + (1 + 1) * 1000)
    assert full_split_compute(study.trials, rungs, [16, 64, 256, 1000]) == pytest.approx(expected)
    notes = rung_notes(study.trials, "minimize", rungs, [16, 64, 96], 1000)
    assert any(line.startswith("a search up to the whole training split (1,000 examples, --rungs 4) would train "
                               f"~{expected:,.0f} examples") for line in notes), notes


def test_a_baseline_an_earlier_lora_search_trained_between_rungs_still_counts(rung_search, cli, tmp_path):
    """Until 2026-11-29 the baseline trained at every rung: its value at rung 1 of such a study is
    shown and counted, and a resume trains nothing again."""
    import sqlite3

    from lora_search._rungs import promoted
    from lora_search._study import full_run_config, stored_space
    from lora_search._trials import plain
    from lora_search.objectives import LoraObjective, Workload

    old = tmp_path / "old.db"
    with sqlite3.connect(rung_search["storage"].removeprefix("sqlite:///")) as source, sqlite3.connect(old) as copy:
        source.backup(copy)
    storage = f"sqlite:///{old}"
    study = optuna.load_study(study_name=STUDY, storage=storage)
    objective = LoraObjective(Workload.from_dict(study.user_attrs["lora_search.workload"]))
    result = plain(objective.train_at_rung(full_run_config(stored_space(study), study.trials[0])[0], 1))
    record = study.user_attrs[ATTR]
    record["rungs"][0]["results"]["0"] = result
    study.set_user_attr(ATTR, record)

    shown = cli("show", STUDY, "--storage", storage)
    assert shown.code == 0, shown.err
    baseline = shown.out.split("baseline (guide preset):")[1].splitlines()[1]
    assert f"rung 0 {study.trials[0].value:.4g}, rung 1 {result['value']:.4g})" in baseline
    again = cli("run", "--study", STUDY, "--storage", storage, "--trials", 12)
    assert again.code == 0, again.err
    wanted = promoted(study.trials, "minimize", record["rungs"], 1, 2)
    assert 0 in wanted and len(wanted) == len(record["rungs"][0]["results"])
    assert "config(s) train on" not in again.err
    assert f"rung 1: {len(wanted)} of {len(wanted)} config(s) trained on 64 examples" in again.out
    assert optuna.load_study(study_name=STUDY, storage=storage).user_attrs[ATTR] == record


def test_a_second_finalist_an_earlier_lora_search_trained_at_the_top_still_counts(rung_search, cli, tmp_path):
    """Until 2026-11-29 the top rung trained the best 2 of the rung below: the second's value
    there competes for the winner, and a resume trains nothing again."""
    import sqlite3

    from lora_search._study import full_run_config, stored_space
    from lora_search._trials import plain
    from lora_search.objectives import LoraObjective, Workload

    old = tmp_path / "old.db"
    with sqlite3.connect(rung_search["storage"].removeprefix("sqlite:///")) as source, sqlite3.connect(old) as copy:
        source.backup(copy)
    storage = f"sqlite:///{old}"
    study = optuna.load_study(study_name=STUDY, storage=storage)
    below = {number: value for number, value in values_at(study, 1).items() if number not in values_at(study, 2)}
    second = best(below, 1)[0]
    objective = LoraObjective(Workload.from_dict(study.user_attrs["lora_search.workload"]))
    result = plain(objective.train_at_rung(full_run_config(stored_space(study), study.trials[second])[0], 2))
    record = study.user_attrs[ATTR]
    record["rungs"][1]["results"][str(second)] = result
    study.set_user_attr(ATTR, record)
    top = values_at(study, 2)
    winner = min(top, key=top.get)

    again = cli("run", "--study", STUDY, "--storage", storage, "--trials", len(study.trials))
    assert again.code == 0, again.err
    assert "config(s) train on" not in again.err
    assert f"best: trial {winner}, eval_loss {top[winner]:.4g} at rung 2 (96 examples" in again.out
    shown = cli("show", STUDY, "--storage", storage, "--top", 20)
    assert shown.code == 0, shown.err
    assert f"trial {second}: eval_loss {result['value']:.4g} at rung 2 (96 examples, 32 validation rows)" in shown.out
    assert optuna.load_study(study_name=STUDY, storage=storage).user_attrs[ATTR] == record


def test_a_search_stopped_by_its_timeout_trains_no_rung_and_says_so(tmp_path, cli, tiny_options):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 500, "--timeout", "3s", "--study", "short", "--storage",
                 storage, "--rungs", 2, *tiny_options(train_sample=16))
    assert result.code == 0, result.err
    assert "stopped: timeout" in result.out
    assert "rungs: not trained, the search stopped at its timeout with" in result.err
    assert "rungs still to train: run the same command again" in result.out
    assert ATTR not in optuna.load_study(study_name="short", storage=storage).user_attrs


def test_a_space_files_rungs_and_trials_start_a_new_study_and_the_options_override_them(tmp_path, cli, tiny_options):
    space = tmp_path / "two-rungs.yaml"
    space.write_text("extends: quick-experiment\nstudy:\n  rungs: 2\n  trials: 3\n")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    outputs = {}
    for study, override in (("from-space", []), ("one-fidelity", ["--rungs", "1", "--trials", 4])):
        result = cli("run", "--space", str(space), "--study", study, "--storage", storage, *override,
                     *tiny_options(train_sample=16))
        assert result.code == 0, result.err
        outputs[study] = result.out + result.err
    from_space = optuna.load_study(study_name="from-space", storage=storage)
    assert from_space.user_attrs["lora_search.workload"]["rungs"] == 2
    assert len(from_space.trials) == 3 and "(3/3 finished" in outputs["from-space"]
    assert len(optuna.load_study(study_name="one-fidelity", storage=storage).trials) == 4
    again = cli("run", "--study", "from-space", "--storage", storage)  # its stored space's 3 trials: all there
    assert again.code == 0 and "(3/3 finished; stopped: already done" in again.out
    assert len(optuna.load_study(study_name="from-space", storage=storage).trials) == 3
    assert [rung["train_examples"] for rung in from_space.user_attrs[ATTR]["rungs"]] == [64]
    one_fidelity = optuna.load_study(study_name="one-fidelity", storage=storage)
    assert one_fidelity.user_attrs["lora_search.workload"]["rungs"] == 1 and ATTR not in one_fidelity.user_attrs
    resumed = cli("run", "--study", "one-fidelity", "--storage", storage, "--trials", 5)  # a study keeps its own rungs
    assert resumed.code == 0, resumed.err
    assert ATTR not in optuna.load_study(study_name="one-fidelity", storage=storage).user_attrs


def copy_of_first_trials(rung_search, name: str, count: int = 6) -> optuna.Study:
    """A new study holding the first ``count`` trials of the fixture's and its attrs, no rung trained."""
    study = optuna.create_study(study_name=name, storage=rung_search["storage"])
    for key, value in load(rung_search).user_attrs.items():
        if key != ATTR:
            study.set_user_attr(key, value)
    for trial in load(rung_search).trials[:count]:
        study.add_trial(trial)
    return study


def first_trials(rung_search, name: str, count: int = 6):
    """``copy_of_first_trials`` and an objective with 2 rungs (the top is rung 1: the best
    quarter of the searched configs, at least 2, and the baseline train there)."""
    from lora_search.objectives import LoraObjective, Workload

    study = copy_of_first_trials(rung_search, name, count)
    return study, LoraObjective(Workload.from_dict({**study.user_attrs["lora_search.workload"], "rungs": 2}))


def two_rung_workers(rung_search, study: optuna.Study):
    """Two CPU worker processes for ``study``'s rungs, as ``run --workers 2 --rungs 2`` starts them."""
    from lora_search._loop import SearchPlan
    from lora_search._rung_workers import RungWorkers
    from lora_search._workers import plan_workers

    attrs = study.user_attrs
    plan = SearchPlan(study_name=study.study_name, storage=rung_search["storage"], space=attrs["lora_search.space"],
                      space_yaml=attrs.get("lora_search.space_yaml"), profile=attrs["lora_search.profile"],
                      workload={**attrs["lora_search.workload"], "rungs": 2}, direction="minimize", sampler="tpe",
                      pruner="none", sampler_seed=0, target=6, deadline=None)
    return RungWorkers(plan, plan_workers(2, accelerator="cpu", gpu_count=0, cpu_cores=2))


def test_a_config_training_at_a_rung_has_a_live_line_on_a_terminal_only(rung_search, monkeypatch):
    import io
    import re
    import sys

    from lora_search._rungs import run_rungs
    from lora_search._study import stored_space

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert "\r" not in rung_search["first"].err  # into a pipe: one line per config, nothing redrawn
    study, objective = first_trials(rung_search, "live")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("COLUMNS", "200")  # a line is cut to the terminal's width
    run_rungs(study, objective, stored_space(study))
    results = optuna.load_study(study_name="live", storage=rung_search["storage"]).user_attrs[ATTR]["rungs"][0]["results"]
    parts = terminal.getvalue().split("\r\033[K")
    for index, number in enumerate(results, start=1):
        label = f"  rung 1 {index}/{len(results)}: trial {number}" + (" (baseline)" if number == "0" else "")
        drawn = [part for part in parts if part.startswith(f"{label}  [")]
        # redrawn at most once a second: the first step and the last at least, the best value once evaluated
        steps = [re.search(r"\] step (\d+)/(\d+)  best eval_loss (\S+)  elapsed", part).groups() for part in drawn]
        assert steps[0][:2] == ("1", steps[-1][1]) and steps[0][2] == "-", drawn
        if results[number]["stop_reason"] == "completed":  # early stopping ends a run before its last step
            assert steps[-1][0] == steps[-1][1], drawn
        # each line is cleared before the config's result line
        assert any(part.startswith(f"{label}  eval_loss {results[number]['value']:.4g}  (rung 0 ") for part in parts)
    assert terminal.getvalue().count("\n") == 1 + len(results)  # the rung's header and one line per config


def test_the_workers_configs_at_a_rung_share_one_live_line(rung_search, monkeypatch):
    """With --workers the rung's configs train at once in other processes, which answer their
    steps about once a second: one line shows the configs in training, their steps together
    and the best value so far, cleared before each config's result line."""
    import io
    import re
    import sys

    from lora_search._rungs import promoted, run_rungs
    from lora_search._study import stored_space

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    study, objective = first_trials(rung_search, "live-workers")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("COLUMNS", "200")
    with two_rung_workers(rung_search, study) as workers:
        run_rungs(study, objective, stored_space(study), workers=workers)
    rungs = optuna.load_study(study_name="live-workers", storage=rung_search["storage"]).user_attrs[ATTR]["rungs"]
    results = rungs[0]["results"]
    assert set(results) == {str(number) for number in promoted(study.trials, "minimize", rungs, 1, 1)} and "0" in results
    parts = terminal.getvalue().split("\r\033[K")
    drawn = [re.fullmatch(r"  rung 1: trial ([\d, ]+)  \[[#.]+\] step (\d+)/(\d+)  best eval_loss (\S+)  elapsed \S+  left ~\S+", part)
             for part in parts if part.startswith("  rung 1: trial ")]
    assert drawn and all(drawn), parts
    for match in drawn:
        assert set(match[1].split(", ")) <= set(results) and 0 < int(match[2]) <= int(match[3])
    for number, result in results.items():  # each result on a line of its own, the live line cleared before it
        assert any(re.search(rf"^  rung 1 \d/{len(results)}: trial {number}( \(baseline\))?  eval_loss {result['value']:.4g}  .* on cpu\)\n",
                             part, flags=re.MULTILINE) for part in parts), parts
    assert terminal.getvalue().count("\n") == 1 + len(results)  # the rung's header and one line per config


def test_no_config_starts_at_a_rung_once_the_deadline_has_passed_and_the_next_run_trains_the_rest(rung_search, capsys):
    """The run's --timeout bounds its rungs: the config in training when the deadline passes
    finishes and is kept, no other starts, and a run without a deadline trains the rest."""
    import time

    from lora_search._rungs import promoted, run_rungs
    from lora_search._study import stored_space

    study, objective = first_trials(rung_search, "deadline")
    deadline = time.time() + 2

    def hold_until_the_deadline(module, args):  # the first config outlives the deadline
        while time.time() < deadline:
            time.sleep(0.05)

    handle = objective.base_model.bert.embeddings.register_forward_pre_hook(hold_until_the_deadline)
    try:
        assert run_rungs(study, objective, stored_space(study), deadline=deadline) == "timeout"
    finally:
        handle.remove()
    wanted = promoted(study.trials, "minimize", [], 1, 1)
    assert len(wanted) >= 2
    err = capsys.readouterr().err
    assert f"rungs: the --timeout has passed with {len(wanted) - 1} of rung 1's {len(wanted)} config(s) untrained; the same command" in err
    stored = optuna.load_study(study_name="deadline", storage=rung_search["storage"]).user_attrs[ATTR]["rungs"]
    assert list(stored[0]["results"]) == [str(wanted[0])]

    assert run_rungs(study, objective, stored_space(study)) is None
    assert f"rung 1: {len(wanted) - 1} of {len(wanted)} config(s) train" in capsys.readouterr().err
    stored = optuna.load_study(study_name="deadline", storage=rung_search["storage"]).user_attrs[ATTR]["rungs"]
    assert set(stored[0]["results"]) == {str(number) for number in wanted}


def test_the_workers_start_no_config_at_a_rung_once_the_deadline_has_passed(rung_search, capsys):
    """Two workers take a config each at once; the others would start when one finishes,
    seconds after the deadline (each worker first loads torch and the base), so they do not."""
    import time

    from lora_search._rungs import promoted, run_rungs
    from lora_search._study import stored_space

    study, objective = first_trials(rung_search, "deadline-workers", count=12)
    wanted = promoted(study.trials, "minimize", [], 1, 1)  # the best 3 of 11 searched and the baseline
    assert len(wanted) >= 3
    with two_rung_workers(rung_search, study) as workers:
        assert run_rungs(study, objective, stored_space(study), workers=workers, deadline=time.time() + 3) == "timeout"
    assert f"the --timeout has passed with {len(wanted) - 2} of rung 1's {len(wanted)} config(s) untrained" in capsys.readouterr().err
    stored = optuna.load_study(study_name="deadline-workers", storage=rung_search["storage"]).user_attrs[ATTR]["rungs"]
    assert set(stored[0]["results"]) == {str(number) for number in wanted[:2]}


def test_a_run_past_its_timeout_trains_no_rung_and_says_so(rung_search, cli, tmp_path, monkeypatch):
    from lora_search._rungs import promoted

    study = copy_of_first_trials(rung_search, "past-timeout")
    # the target is there, the deadline passes while the run loads the model
    result = cli("run", "--study", "past-timeout", "--storage", rung_search["storage"], "--trials", 6, "--timeout", "0.001")
    assert result.code == 0, result.err
    wanted = promoted(study.trials, "minimize", [], 1, 2)  # the fixture's 3 rungs: rung 1 is not the top
    assert f"rungs: the --timeout has passed with {len(wanted)} of rung 1's {len(wanted)} config(s) untrained" in result.err
    assert "(6/6 finished; stopped: timeout" in result.out and "still to train" in result.out
    stored = optuna.load_study(study_name="past-timeout", storage=rung_search["storage"]).user_attrs[ATTR]["rungs"]
    assert stored[0]["results"] == {}
    # until they are trained, the winner show and export name may change
    note = "note: study 'past-timeout' has rungs still to train, so its winner may change: the same 'lora-search run' trains them"
    assert cli("show", "past-timeout", "--storage", rung_search["storage"]).err.strip() == note
    monkeypatch.chdir(tmp_path)  # where the export goes
    exported = cli("export", "past-timeout", "--storage", rung_search["storage"], "--name", "early", "--format", "json")
    assert exported.code == 0 and note in exported.err
    assert note not in cli("show", STUDY, "--storage", rung_search["storage"]).err  # the fixture's rungs are all trained


def test_a_config_that_fails_at_a_rung_is_reported_kept_out_and_trained_by_the_next_run(rung_search, capsys):
    from lora_search._rungs import run_rungs
    from lora_search._study import stored_space

    study, objective = first_trials(rung_search, "failing")
    embeddings = objective.base_model.bert.embeddings

    def broken_batch(module, args):
        if module.training:
            raise ValueError("broken batch")

    handle = embeddings.register_forward_pre_hook(broken_batch)
    try:
        assert run_rungs(study, objective, stored_space(study)) == "rung failed"
    finally:
        handle.remove()
    err = capsys.readouterr().err
    assert "failed (ValueError: broken batch); run the same command again to retry it" in err
    stored = optuna.load_study(study_name="failing", storage=rung_search["storage"]).user_attrs[ATTR]["rungs"]
    assert len(stored) == 1 and stored[0]["results"] == {}

    assert run_rungs(study, objective, stored_space(study)) is None
    complete = {t.number: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.number}
    results = optuna.load_study(study_name="failing", storage=rung_search["storage"]).user_attrs[ATTR]["rungs"][0]["results"]
    assert set(results) == {str(n) for n in [*best(complete, 2), 0]} and all(math.isfinite(r["value"]) for r in results.values())


def test_resume_keeps_the_rungs_and_refuses_others(rung_search, cli):
    refused = cli("run", "--study", STUDY, "--storage", rung_search["storage"], "--trials", 20, "--rungs", "2")
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1
    assert "--rungs 3" in refused.err


@pytest.mark.parametrize("rules", ["2", "3", "4"])
def test_a_study_whose_rungs_followed_earlier_rules_is_not_resumed(rung_search, cli, tmp_path, rules):
    """Until 2026-11-28 each trial climbed the rungs itself (rung_rules 2, or none before); until
    2026-11-29 rungs trained the trial's settings on the proxy's evaluation grid (3), then the
    full run's patience in the rung's evaluations (4). New results would not compare with its
    own, so the resume is refused and the study left as it was."""
    import sqlite3

    old = tmp_path / "old.db"
    with sqlite3.connect(rung_search["storage"].removeprefix("sqlite:///")) as source, sqlite3.connect(old) as copy:
        source.backup(copy)
        copy.execute(f"UPDATE study_user_attributes SET value_json = '{rules}' WHERE key = 'lora_search.rung_rules'")
    storage = f"sqlite:///{old}"
    before = [(t.number, t.state, t.value) for t in optuna.load_study(study_name=STUDY, storage=storage).get_trials()]
    refused = cli("run", "--study", STUDY, "--storage", storage, "--trials", 30)
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert "trained its rungs by an earlier lora-search's rules" in refused.err and "--study NEW-NAME" in refused.err
    assert [(t.number, t.state, t.value) for t in optuna.load_study(study_name=STUDY, storage=storage).get_trials()] == before
    shown = cli("show", STUDY, "--storage", storage)
    assert shown.code == 0, shown.err


@pytest.mark.parametrize(("options", "fragment"), [
    (["--rungs", "0"], "--rungs: must be a positive integer, got 0"),
    (["--rungs", "two"], "invalid int value: 'two'"),
])
def test_bad_rung_options_are_refused_before_anything_is_stored(rung_search, cli, tiny_options, options, fragment):
    storage = rung_search["storage"]
    before = optuna.get_all_study_names(storage)
    result = cli("run", "--space", "quick-experiment", "--study", "refused", "--storage", storage, *tiny_options(), *options)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert fragment in lines[-1]
    assert optuna.get_all_study_names(storage) == before
