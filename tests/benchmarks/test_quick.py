"""Every benchmark's --quick mode runs (real code, a subprocess each) and writes a well-formed table,
and benchmarks/gpu_check.sh passes its dry run (SCALE=0: every phase with tiny settings on the CPU).

They start together, two at a time (most of their time is process start-up and
single-threaded training), the dry run first: it is the longest.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from mysql_server import MARIADB_SERVER
from postgres_cluster import POSTGRES_BIN

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
OURS = ("overhead", "peer", "throughput", "pruning", "search_vs_guide", "transfer", "workers", "storage_workers")
ALL = sorted(path.stem for path in BENCHMARKS.glob("*.py") if not path.stem.startswith("_"))


def test_every_benchmark_script_is_covered():
    assert set(OURS) == set(ALL), f"benchmarks without a check: {sorted(set(ALL) - set(OURS))}; checks without a script: {sorted(set(OURS) - set(ALL))}"


def tables(markdown: str) -> list[list[list[str]]]:
    """The markdown tables in ``markdown``: lists of rows of cells."""
    found, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            found.append(current)
            current = []
    return found


def assert_well_formed(table: list[list[str]]) -> None:
    header, separator, *body = table
    assert all(cell for cell in header), f"empty heading in {header}"
    assert all(set(cell) == {"-"} for cell in separator) and len(separator) == len(header), f"bad separator {separator}"
    assert body, "table without rows"
    for row in body:
        assert len(row) == len(header), f"row {row} has {len(row)} cells for {len(header)} columns"
        assert all(cell not in ("nan", "inf", "None") for cell in row), f"unmeasured cell in {row}"


# the longest first, so the pairs finish close together
START_ORDER = ("gpu_check", "transfer", "workers", "storage_workers", "pruning", "overhead", "peer", "search_vs_guide", "throughput")
GPU_CHECK_PHASES = ["llama", "lm-search", "overhead-1b", "throughput", "lm-4bit", "rung-workers", "train", "demo",
                    "overhead-minilm", "tests"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("benchmark-results")


@pytest.fixture(scope="module")
def quick_runs(results):
    """name -> Future of the finished subprocess of ``benchmarks/<name>.py --quick`` (gpu_check: its dry run)."""
    def launch(name: str) -> subprocess.CompletedProcess:
        if name == "gpu_check":
            environment = {**os.environ, "SCALE": "0", "PY": sys.executable, "OUT": str(results / "gpu")}
            return subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh")], capture_output=True, text=True, timeout=600, env=environment)
        command = [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--results", str(results)]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    names = sorted([*OURS, "gpu_check"], key=START_ORDER.index)
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {name: pool.submit(launch, name) for name in names}


def run_quick(name: str, folder: Path, runs: dict[str, Future]) -> tuple[str, dict]:
    finished = runs[name].result()
    assert finished.returncode == 0, f"{name} --quick exited {finished.returncode}:\n{finished.stderr[-3000:]}"
    markdown = (folder / f"{name}.md").read_text()
    record = json.loads((folder / f"{name}.json").read_text())
    found = tables(markdown)
    assert found, f"{name}.md holds no table:\n{markdown}"
    for table in found:
        assert_well_formed(table)
    return markdown, record


@pytest.mark.parametrize("name", OURS)
def test_quick_mode_writes_table_and_record(name, results, quick_runs):
    markdown, record = run_quick(name, results, quick_runs)
    assert record["benchmark"] == name and record["mode"] == "quick"
    assert record["rows"], "no raw rows recorded"
    assert {"torch", "transformers", "peft", "optuna"} <= set(record["versions"])
    assert markdown.startswith("Command: `python benchmarks/") and "--quick" in markdown.splitlines()[0]
    assert "Versions: " in markdown and record["machine"]["cores"] >= 1
    assert record["device"]["accelerator"] in ("cpu", "cuda") and "; trains on " in markdown
    CHECKS[name](record)


def check_overhead(record: dict) -> None:
    summary = record["summary"]
    assert summary["trials"] == record["parameters"]["trials"] == len(record["rows"])
    assert 0 < summary["outside_share"] < 1
    assert all(row["train_s"] > 0 and row["before_loop_s"] >= 0 and row["state"] == "COMPLETE" for row in record["rows"])


def check_peer(record: dict) -> None:
    summary = record["summary"]
    for side in ("peer", "ours"):
        assert summary[side]["trials"] == record["parameters"]["trials"]
        assert summary[side]["setup_s"] > 0 and summary[side]["loop_s"] > 0
    assert math.isfinite(summary["wall_ratio_ours_over_peer"]) and summary["wall_ratio_ours_over_peer"] > 0


def check_throughput(record: dict) -> None:
    for row in record["rows"]:
        assert row["examples"] == row["bare_examples"] > 0, "both sides must train the same number of examples"
        assert row["optimizer_steps"] == row["bare_optimizer_steps"] > 0, "both sides must take the same optimizer steps"
        assert row["bare_examples_per_s"] > 0 and row["trial_examples_per_s"] > 0


def check_pruning(record: dict) -> None:
    parameters = record["parameters"]
    assert {(row["seed"], row["pruner"]) for row in record["rows"]} == {
        (seed, pruner) for seed in parameters["seeds"] for pruner in parameters["pruners"]}
    for row in record["rows"]:
        assert row["complete"] + row["pruned"] + row["infeasible"] == parameters["trials"]
        assert row["examples"] > 0
        assert len(row["replayed"]) == parameters["replays"] and all(math.isfinite(v) for v in row["replayed"])
        if row["pruner"] == "none":
            assert row["pruned"] == 0 and row["same_best"] and row["compute_saved"] == "0%"
            assert row["replay_losses"] == [0.0] * parameters["replays"], "no pruning is the reference of its own replays"
    assert [p["pruner"] for p in record["summary"]["by_pruner"]] == parameters["pruners"]
    assert all(p["seeds"] == len(parameters["seeds"]) for p in record["summary"]["by_pruner"])
    for info in record["summary"]["noise"].values():
        assert info["noise"] >= 0 and len(info["values"]) == parameters["replays"] + 1
    rule_alone = record["summary"]["rule_alone"]
    assert set(rule_alone) == {str(seed) for seed in parameters["seeds"]}
    for seed, by_rule in rule_alone.items():
        complete = next(r["complete"] for r in record["rows"] if r["pruner"] == "none" and str(r["seed"]) == seed)
        assert list(by_rule) == ["ceiling", *(p for p in parameters["pruners"] if p != "none")]
        ceiling = by_rule["ceiling"]
        assert ceiling["winner_kept"] and ceiling["stopped"] == complete - 1
        for outcome in by_rule.values():
            assert 0 <= outcome["stopped"] < complete and outcome["saved_share"] >= 0
            if outcome["winner_kept"]:
                # letting the winner finish, no rule saves more than stopping every other trial at once
                assert outcome["saved_share"] <= ceiling["saved_share"] + 1e-12


def check_search_vs_guide(record: dict) -> None:
    parameters = record["parameters"]
    assert len(record["rows"]) == len(parameters["scenarios"]) * len(parameters["samplers"]) * len(parameters["seeds"])
    for run in record["rows"]:
        assert run["baseline"] is not None, f"{run['scenario']}: the guide preset trial did not complete"
        final = run["best"][str(parameters["trials"])]  # JSON keys are strings
        assert final <= run["baseline"], "the best of a study includes its baseline, so it cannot be worse"


def check_workers(record: dict) -> None:
    trials = record["parameters"]["trials"]
    assert {row["arrangement"] for row in record["rows"]} == {"1 worker x 2 threads", "2 workers x 1 thread"}
    for row in record["rows"]:
        assert row["finished"] == trials and row["failed"] == 0, f"{row['arrangement']}: {row['failures']}"
        # two workers may both start the last trial; the later one ends as surplus, untrained
        assert row["surplus"] <= (1 if row["arrangement"].startswith("2 workers") else 0)
        # the rung after the trials: the best quarter of the searched trials (at least 2 where there are) and the baseline
        searched = trials - 1
        assert len(row["rung_configs"]) == min(searched, max(2, math.ceil(searched / 4))) + 1 and 0 in row["rung_configs"]
        assert row["rung_examples"] > 0 and 0 < row["rung_wall_s"] < row["wall_s"]
    examples = {row["examples"] for row in record["rows"]}
    assert len(examples) == 1, f"both arrangements must run the same trials, trained {examples}"


def check_storage_workers(record: dict) -> None:
    parameters = record["parameters"]
    servers_here = {"postgresql": (POSTGRES_BIN / "initdb").exists(), "mysql": MARIADB_SERVER.exists()}
    expected = {"sqlite", "journal"} | {scheme for scheme, here in servers_here.items() if here}
    assert {row["storage"] for row in record["rows"]} == expected, f"a storage was skipped: {record['summary']['notes']}"
    assert sorted({row["workers"] for row in record["rows"]}) == parameters["workers"]
    for row in record["rows"]:
        assert row["finished"] == row["target"] == parameters["trials"], row
        assert row["duplicate_numbers"] == 0 and row["failed"] == 0 and not row["errors"], row
        assert row["surplus"] <= row["workers"] - 1
        assert 0 < row["trials_per_minute"] <= row["ideal_per_minute"] * 1.05


def test_gpu_check_dry_run(results, quick_runs):
    """Every phase of benchmarks/gpu_check.sh runs with tiny settings, and its report holds them all."""
    finished = quick_runs["gpu_check"].result()
    out = results / "gpu"
    log = (out / "run.log").read_text() if (out / "run.log").exists() else finished.stderr
    assert finished.returncode == 0, f"gpu_check.sh exited {finished.returncode}:\n{log[-4000:]}"
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["mode"] == "dry-run"
    cuda = record["device"]["accelerator"] == "cuda"  # only there is the estimate judged against the peak
    assert [(p["phase"], p["status"]) for p in record["phases"]] == [(name, "ok") for name in GPU_CHECK_PHASES]
    for study in ("lm-search", "lm-4bit"):
        rows = record["memory"][study]["rows"]
        assert rows, f"{study}: no trial trained"
        assert all(row["estimate_mb"] > 0 and row["peak_mb"] > 0 and (row["in_band"] is None) != cuda for row in rows), rows
    assert record["records"]["overhead-1b"]["parameters"]["task"] == "causal-lm"
    assert set(record["records"]) == {"overhead-1b", "overhead-minilm", "throughput"}
    assert record["demo"]["outcomes"] == {"complete": 1} and " passed" in record["tests"]
    assert record["rung_workers"] == {"configs": 2, "devices": ["cpu"]}  # the one searched trial and the baseline
    # 120 rows: 24 held out for validation and 24 for test, 72 trained on in 5 steps of 16
    assert record["train"]["batch"]["optimizer_steps"] == 5 and set(record["train"]["metrics"]) == {
        f"{split}_{name}" for split in ("validation", "test") for name in ("loss", "accuracy", "f1")}
    import shutil

    assert ("gpu_processes" in record) == (shutil.which("nvidia-smi") is not None)  # sampled where there is a GPU
    assert bool(record["targets"]) == cuda, "the targets are judged on a GPU only"
    assert record["unreadable"] == {}
    # every phase's whole log and the study files come back beside the report
    assert {f"{name}.log" for name in GPU_CHECK_PHASES} <= {path.name for path in (out / "logs").iterdir()}
    assert {"lm.db", "lm4.db", "demo.db", "rung-workers.db"} <= {path.name for path in (out / "logs").iterdir()}
    found = tables((out / "gpu_check.md").read_text())
    assert len(found) >= 6
    for table in found:
        assert_well_formed(table)


def check_transfer(record: dict) -> None:
    parameters, summary = record["parameters"], record["summary"]
    assert [(row["scenario"], row["seed"]) for row in record["rows"]] == [
        (scenario, seed) for scenario in parameters["scenarios"] for seed in parameters["seeds"]]
    for row in record["rows"]:
        assert row["trials"] == parameters["trials"]
        # both full runs were trained and scored on the test split
        assert math.isfinite(row["guide"]) and math.isfinite(row["winner"]) and row["metric"] == "test_loss"
        assert row["gain"] == pytest.approx((row["guide"] - row["winner"]) / row["guide"])
        # the third arm, the guide preset fitted to the data, was trained and scored the same way
        assert math.isfinite(row["fitted"]) and row["gain_over_fitted"] == pytest.approx((row["fitted"] - row["winner"]) / row["fitted"])
        assert row["search_compute"] > 0 and row["winner_epochs"] > 0
        # the run as trained is at most the run as planned: the same examples over a shorter run
        assert row["search_compute_trained"] >= row["search_compute"]
        # the quick searches have 2 rungs: the saving against every trial at the top rung is measured
        assert row["rungs"] == [32, 64] and -1 < row["compute_saved"] < 1 and row["top_rung_configs"] >= 2
    rank = summary["rank"]
    # the complete quick trials (the percentile pruner may stop one) are the candidates, all trained in full
    assert 2 <= rank["configs"] == len(rank["points"]) == rank["candidates"] <= parameters["spearman_configs"]
    assert [point["first_rung_rank"] for point in rank["points"]] == list(range(1, rank["configs"] + 1))
    assert all(math.isfinite(point["test"]) and 1 <= len(point["values"]) <= 2 for point in rank["points"])
    assert [r["configs"] for r in rank["by_rung"]] == [rank["configs"], *([sum(len(p["values"]) == 2 for p in rank["points"])]
                                                                         if len(rank["by_rung"]) > 1 else [])]
    assert summary["spearman"] == rank["by_rung"][0]["spearman"]
    assert summary["spearman"] is None or -1 <= summary["spearman"] <= 1  # None: the tiny model's values all tie
    # one seed is no verdict
    assert all(verdict["won"] is None for scenario in summary["scenarios"].values() for verdict in scenario.values())
    assert summary["won"] == 0


def test_gpu_check_tells_the_parent_of_the_workers_from_the_workers_in_the_gpu_samples(monkeypatch):
    """gpu_check.sh samples "PID MIB COMMAND" beside its rung-workers phase (the command empty
    where /proc cannot see the GPU's process ids); the report keeps each kind's most."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _gpu_check

    samples = ("101 520 /usr/bin/python3 -m lora_search run --space quick-experiment --devices 0\n"
               "102 3100 /usr/bin/python3 -m lora_search._worker_main rungs\n"
               "102 3900 /usr/bin/python3 -m lora_search._worker_main rungs\n"
               "103 [N/A]\n"
               "104 700\n")
    most = _gpu_check.gpu_process_memory(samples)
    assert most == {"parent_mib": 520, "workers_mib": 3900, "unnamed_mib": 700, "samples": 4}
    assert _gpu_check.gpu_process_text(most) == ("parent of the workers at most 520 MiB; workers at most 3,900 MiB; "
                                                 "processes /proc did not name at most 700 MiB")
    assert _gpu_check.gpu_process_text(_gpu_check.gpu_process_memory("")) == "nvidia-smi listed no process (a container can hide them)"
    alone = _gpu_check.gpu_process_memory("102 3100 python -m lora_search._worker_main rungs\n")
    assert _gpu_check.gpu_process_text(alone) == "parent of the workers none; workers at most 3,100 MiB"


def test_transfer_combines_runs_made_one_scenario_at_a_time(results, quick_runs, tmp_path):
    """--combine reports the rows of separate runs as one, and refuses runs that are not alike."""
    _, record = run_quick("transfer", results, quick_runs)
    # a second run of another scenario, as a separate --results folder would hold it
    other = json.loads(json.dumps(record))
    other["parameters"]["scenarios"] = ["other"]
    other["rows"] = [{**row, "scenario": "other", "gain": -0.5} for row in record["rows"]]
    other["summary"]["rank"] = None
    # a scenario's search may differ (its defaults are its own); the data may not
    other["parameters"].update(trials=16, rungs=3)
    first, second, unlike = tmp_path / "first", tmp_path / "second", tmp_path / "unlike"
    for folder, content in ((first, record), (second, other), (unlike, {**other, "parameters": {**other["parameters"], "train_rows": 99}})):
        folder.mkdir()
        (folder / "transfer.json").write_text(json.dumps(content))

    def combine(*folders: Path, rank_from: Path | None = None) -> subprocess.CompletedProcess:
        command = [sys.executable, str(BENCHMARKS / "transfer.py"), "--combine", ",".join(map(str, folders)), "--results", str(tmp_path / "out"),
                   *(["--rank-from", str(rank_from)] if rank_from else [])]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    finished = combine(first, second)
    assert finished.returncode == 0, finished.stderr[-3000:]
    combined = json.loads((tmp_path / "out" / "transfer.json").read_text())
    assert combined["mode"] == "quick" and combined["rows"] == record["rows"] + other["rows"]
    assert combined["parameters"]["scenarios"] == [*record["parameters"]["scenarios"], "other"]
    assert [s["command"] for s in combined["parameters"]["sources"]] == [record["command"], other["command"]]
    assert combined["summary"]["rank"] == record["summary"]["rank"]
    assert combined["summary"]["scenarios"]["other"]["over_guide"]["mean"] == pytest.approx(-0.5)
    markdown = (tmp_path / "out" / "transfer.md").read_text()
    assert "Combined from 2 runs" in markdown and "| other |" in markdown
    trials = record["parameters"]["trials"]
    assert f"trials per search: quick-experiment {trials} trials with --rungs {record['parameters']['rungs']}, other 16 trials with --rungs 3" in markdown
    for table in tables(markdown):
        assert_well_formed(table)

    # --rank-from: a rank run of its own (--seeds 0, random configs) reported beside the searches' one
    alone = tmp_path / "alone"
    alone.mkdir()
    rank = {**record["summary"]["rank"], "study": "quick-experiment.random", "sampler": "random"}
    (alone / "transfer.json").write_text(json.dumps({**record, "parameters": {**record["parameters"], "seeds": []}, "rows": [],
                                                     "summary": {**record["summary"], "rank": rank}}))
    finished = combine(first, second, rank_from=alone)
    assert finished.returncode == 0, finished.stderr[-3000:]
    combined = json.loads((tmp_path / "out" / "transfer.json").read_text())
    assert combined["summary"]["rank"] == record["summary"]["rank"]
    assert combined["summary"]["borrowed_ranks"] == [{**rank, "results": str(alone)}]
    assert combined["rows"] == record["rows"] + other["rows"]
    markdown = (tmp_path / "out" / "transfer.md").read_text()
    assert f"Rank run (from {alone}, --rank-from), study quick-experiment.random:" in markdown
    assert f"(study quick-experiment.random: random configs, {alone})" in markdown.splitlines()[-1]
    assert "(study quick-experiment.42: its search's trials)" in markdown.splitlines()[-1]

    for folders, rank_from, says in (((first, first), None, "more than one folder"), ((first, unlike), None, "differs from"),
                                     ((first, tmp_path), None, "does not exist"), ((first,), second, "has no rank run"),
                                     ((first,), unlike, "its rank run is not like theirs")):
        refused = combine(*folders, rank_from=rank_from)
        assert refused.returncode != 0 and says in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    alone_flag = subprocess.run([sys.executable, str(BENCHMARKS / "transfer.py"), "--rank-from", str(alone)], capture_output=True, text=True,
                                timeout=120)
    assert alone_flag.returncode == 2 and "give --combine too" in alone_flag.stderr


def test_transfer_reads_the_guide_arms_of_an_earlier_run(results, quick_runs, tmp_path):
    """--guides-from: the search and the winner are new, the guide arms are the earlier run's, untrained."""
    _, record = run_quick("transfer", results, quick_runs)

    def transfer(earlier: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(BENCHMARKS / "transfer.py"), "--quick", "--spearman-configs", "0", "--guides-from", str(earlier),
                   "--work", str(tmp_path / "work"), "--results", str(tmp_path / out), *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    finished = transfer(results, "out")
    assert finished.returncode == 0, finished.stderr[-3000:]
    again = json.loads((tmp_path / "out" / "transfer.json").read_text())
    arms = ("guide", "guide_accuracy", "guide_epochs", "guide_train_s", "fitted", "fitted_accuracy", "fitted_epochs")
    for row, earlier in zip(again["rows"], record["rows"], strict=True):
        assert {key: row[key] for key in arms} == {key: earlier[key] for key in arms}
        assert row["gain"] == pytest.approx((row["guide"] - row["winner"]) / row["guide"])
        assert row["gain_over_fitted"] == pytest.approx((row["fitted"] - row["winner"]) / row["fitted"])
        runs = tmp_path / "work" / f"{row['scenario']}.{row['seed']}" / "runs"
        assert [path.name for path in runs.iterdir()] == [f"trial-{row['winner_trial']}"]  # the winner alone was trained
    assert again["parameters"]["guides_from"] == str(results)
    assert "The guide arms were not trained again" in (tmp_path / "out" / "transfer.md").read_text()

    unlike = tmp_path / "unlike"
    unlike.mkdir()
    (unlike / "transfer.json").write_text(json.dumps({**record, "parameters": {**record["parameters"], "train_rows": 7}}))
    seed = record["parameters"]["seeds"][0] + 1  # --first-seed: seeds the earlier run never searched with
    for earlier, extra, says in ((unlike, [], "differs from this run in train_rows"), (tmp_path / "nowhere", [], "does not exist"),
                                 (results, ["--first-seed", str(seed)], f"has no guide arms for quick-experiment seed {seed}")):
        refused = transfer(earlier, "refused", *extra)
        assert refused.returncode != 0 and says in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "refused").exists()


def test_transfer_rank_run_alone_over_random_configs(tmp_path):
    """--seeds 0 --spearman-sampler random: no searches, a study of random never-pruned configs at one fidelity (standard's
    own default of 3 rungs set aside), each trained in full."""
    command = [sys.executable, str(BENCHMARKS / "transfer.py"), "--quick", "--scenarios", "standard", "--seeds", "0",
               "--spearman-sampler", "random", "--spearman-rungs", "2", "--results", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "transfer.json").read_text())
    rank = record["summary"]["rank"]
    assert record["rows"] == [] and rank["study"] == "standard.random"
    import optuna
    study = optuna.load_study(study_name="standard.random", storage=f"sqlite:///{tmp_path / 'work' / 'standard.random' / 'studies' / 'lora-search.db'}")
    assert study.user_attrs["lora_search.workload"]["rungs"] == 1 and "lora_search.rung_results" not in study.user_attrs
    # the baseline and two random configs, all complete at the one fidelity, all trained in full
    assert rank["configs"] == rank["candidates"] == len(rank["points"]) == 3
    assert sorted(point["trial"] for point in rank["points"]) == [0, 1, 2]
    # --spearman-rungs 2: each also trained at rung 1 (all 64 training rows), outside the study, once
    assert all(len(point["values"]) == 2 and math.isfinite(point["test"]) for point in rank["points"])
    from lora_search._study import RUNG_RULES

    trained = json.loads((tmp_path / "work" / "standard.random" / f"rank-rungs-rules{RUNG_RULES}.json").read_text())
    assert trained == {f"trial-{p['trial']}-rung-1": p["values"][1] for p in rank["points"]}
    assert [r["configs"] for r in rank["by_rung"]] == [3, 3] and rank["trained_rungs"] == 2
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "at rung 1" not in again.stderr, again.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "transfer.json").read_text())["summary"]["rank"]["points"] == rank["points"]
    assert sorted((tmp_path / "work" / "standard.random" / "runs").iterdir()) == [
        tmp_path / "work" / "standard.random" / "runs" / f"trial-{n}" for n in range(3)]
    markdown = (tmp_path / "out" / "transfer.md").read_text()
    assert "drawn at random" in markdown and "**Spearman rung 0: " in markdown and "each also trained at rung 1 where its study had no value" in markdown
    for table in tables(markdown):
        assert_well_formed(table)

    refused = subprocess.run([sys.executable, str(BENCHMARKS / "transfer.py"), "--quick", "--seeds", "0", "--results", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--spearman-sampler random" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


CHECKS = {
    "overhead": check_overhead,
    "peer": check_peer,
    "throughput": check_throughput,
    "pruning": check_pruning,
    "search_vs_guide": check_search_vs_guide,
    "workers": check_workers,
    "storage_workers": check_storage_workers,
    "transfer": check_transfer,
}


def test_search_vs_guide_resumes_from_its_studies_folder(tmp_path):
    """With --studies DIR a second run continues the studies of the first instead of starting again."""
    studies, results = tmp_path / "studies", tmp_path / "results"

    def run(trials: int) -> dict:
        command = [sys.executable, str(BENCHMARKS / "search_vs_guide.py"), "--quick", "--trials", str(trials),
                   "--studies", str(studies), "--results", str(results)]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert finished.returncode == 0, finished.stderr[-3000:]
        return json.loads((results / "search_vs_guide.json").read_text())

    def trial_starts() -> dict[str, list]:
        import optuna

        starts = {}
        for path in sorted(studies.glob("*.journal")):
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
            study = optuna.load_study(study_name=path.stem, storage=storage)
            starts[path.stem] = [t.datetime_start for t in study.trials]
        return starts

    run(2)
    before = trial_starts()
    assert len(before) == 2 and all(len(starts) == 2 for starts in before.values())  # tpe and random
    record = run(3)
    after = trial_starts()
    assert {name: starts[:2] for name, starts in after.items()} == before  # the first run's trials, kept
    assert all(len(starts) == 3 for starts in after.values())  # and one more each
    assert record["summary"]["total_trials"] == 2 * 3


def test_gpu_check_reports_a_study_file_a_killed_phase_left_half_made(monkeypatch, tmp_path, capsys):
    """A phase killed after it made its SQLite file but before its study: the report says the file
    is unreadable and still writes everything else."""
    import sqlite3
    import time

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _gpu_check

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "phases.tsv").write_text("lm-search\ttimed out\t100.000\t100\tpython -m lora_search run\n")
    sqlite3.connect(work / "lm.db").execute("create table unrelated (x)").connection.commit()
    (work / "demo.db").write_bytes(b"not a database at all")
    assert _gpu_check.report(work, out, 0, time.time(), None) == 1  # the phase timed out
    record = json.loads((out / "gpu_check.json").read_text())
    assert set(record["unreadable"]) == {"lm.db", "demo.db"} and record["memory"] == {}
    text = (out / "gpu_check.md").read_text()
    assert "**Phases not ok:** lm-search" in text and text.count("Unreadable: ") == 2
