"""Search beats the guide: per scenario, the guide preset's value vs the best after 10 and 30 trials.

For every scenario, sampler (TPE, random) and seed, one ``lora-search run`` study
(the scenario's own default pruner, as a user gets it). Trial 0 of every study is the
scenario's guide preset (the baseline); "best after k" is the best complete feasible
value among trials 0..k-1, so it is never worse than the baseline. The seed is the
workload's: it picks the data sample, the initialisation and the sampler's draws, so
each seed has its own baseline value and the gain is taken within each study.
Median and range (min-max) over the seeds.

Up to trial 10 TPE draws its start-up trials with a random sampler seeded like
``--sampler random``, so both samplers share their first 10 trials and the two
"after 10" figures agree by construction; they part from trial 11 on.

    python benchmarks/search_vs_guide.py            # the session's reduced run (see --help for the defaults)
    python benchmarks/search_vs_guide.py --trials 30 --seeds 3 --train-sample 128 --eval-sample 128 --max-length 64
                                                    # the full design: 5 scenarios x 2 samplers x 3 seeds x 30 trials
    python benchmarks/search_vs_guide.py --quick    # 1 scenario, 1 seed, 3 trials on a tiny model

A full run takes hours on 2 cores: with ``--studies DIR`` the study files stay in DIR,
and the same command run again resumes every unfinished study where it stopped (a
finished one is only read back), so an interrupted run loses at most the running trials.
"""

from __future__ import annotations

import sys

import _common

SAMPLERS = ("tpe", "random")


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--scenarios", default=None, help="comma-separated (default: all five; quick-experiment with --quick)")
    parser.add_argument("--trials", type=int, default=None, help="trials per study (default 30; 3 with --quick)")
    parser.add_argument("--checkpoints", default="10", help="also report the best after these many trials (comma-separated)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per scenario and sampler (default 3; 1 with --quick)")
    parser.add_argument("--train-sample", type=int, default=32, help="training examples per trial (full mode)")
    parser.add_argument("--eval-sample", type=int, default=32, help="evaluation examples per evaluation (full mode)")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per example (full mode)")
    parser.add_argument("--jobs", type=int, default=1, help="studies run at the same time, each in its own process")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job (default: 2 / jobs; 1 with --quick)")
    parser.add_argument("--studies", type=_common.Path, metavar="DIR",
                        help="keep the study files (SCENARIO.SAMPLER.SEED.db) in DIR; run again to resume (default: a temporary folder)")
    args = parser.parse_args(argv)
    from lora_search.spaces import scenario_names

    scenarios = args.scenarios.split(",") if args.scenarios else (["quick-experiment"] if args.quick else scenario_names())
    trials = args.trials or (3 if args.quick else 30)
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if int(c) < trials} | {trials})
    seeds = list(range(42, 42 + (args.seeds or (1 if args.quick else 3))))
    threads = args.threads or (1 if args.quick else max(1, 2 // args.jobs))
    _common.quiet_libraries()

    with _common.studies_folder(args.studies) as studies:
        fields = {"torch_threads": threads}
        if not args.quick:
            fields.update(train_sample=args.train_sample, eval_sample=args.eval_sample, max_length=args.max_length)
        base = _common.workload(args.quick, studies, **fields)
        run = _common.Run("search_vs_guide", args.quick, {"scenarios": scenarios, "trials": trials, "checkpoints": checkpoints,
                                                          "seeds": seeds, "samplers": list(SAMPLERS), "jobs": args.jobs,
                                                          "workload": base.to_dict()})
        tasks = [(scenario, sampler, seed, base.replace(seed=seed).to_dict(), str(studies), args.quick, trials, checkpoints)
                 for scenario in scenarios for seed in seeds for sampler in SAMPLERS]
        if args.jobs == 1:
            runs = [one_study(*task) for task in tasks]
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                runs = list(pool.map(one_study, *zip(*tasks)))

    direction = base.direction
    rows = []
    for scenario in scenarios:
        mine = [r for r in runs if r["scenario"] == scenario]
        baselines = [r["baseline"] for r in mine if r["sampler"] == SAMPLERS[0] and r["baseline"] is not None]
        row = {"scenario": scenario, "pruner": mine[0]["pruner"], "guide": spread(baselines)}
        for sampler in SAMPLERS:
            for k in checkpoints:
                bests = [r["best"][k] for r in mine if r["sampler"] == sampler and r["best"][k] is not None]
                gains = [_common.gain(r["best"][k], r["baseline"], direction) for r in mine if r["sampler"] == sampler]
                gains = [g for g in gains if g is not None]
                row[f"{sampler}@{k}"] = spread(bests)
                row[f"{sampler}@{k} gain"] = spread(gains, percent=True)
        rows.append(row)
    columns = [("scenario", "scenario"), ("pruner", "pruner"), ("guide preset", "guide")]
    for sampler in SAMPLERS:
        for k in checkpoints:
            columns += [(f"{sampler.upper() if sampler == 'tpe' else sampler} best after {k}", f"{sampler}@{k}"),
                        ("gain", f"{sampler}@{k} gain")]
    summary = {"direction": direction, "metric": base.metric,
               "total_trials": sum(len(r["trials"]) for r in runs), "total_wall_s": sum(r["wall_s"] for r in runs),
               "runs": [{k: v for k, v in r.items() if k != "trials"} for r in runs]}
    body = (
        f"{len(scenarios)} scenarios x {len(SAMPLERS)} samplers x {len(seeds)} seeds ({', '.join(map(str, seeds))}) x {trials} trials; "
        f"workload: train sample {base.train_sample}, eval sample {base.eval_sample}, max length {base.max_length}, "
        f"{base.evaluations_per_trial} evaluations per trial, {args.jobs} studies at a time with {threads} torch threads each; metric {base.metric} ({direction}); "
        f"{summary['total_trials']} trials, {summary['total_wall_s'] / 60:.0f} min of trial time (first trial start to last trial end, summed over studies), "
        f"trained {trained_between(runs)} (a resumed or re-read run shows the times of the training, not its own). Cells: median [min - max] over the seeds; "
        f"gain = how much better than the same study's guide preset.\n\n"
        + _common.markdown_table(columns, rows)
        + "\n" + verdict(runs, scenarios, trials, direction) + "\n"
    )
    _common.write(run.record([{k: v for k, v in r.items() if k != "trials"} for r in runs], summary), body, _common.results_folder(args))
    return 0


def trained_between(runs: list[dict]) -> str:
    import datetime

    starts = [r["first_start"] for r in runs if r["first_start"] is not None]
    ends = [r["last_end"] for r in runs if r["last_end"] is not None]
    if not starts:
        return "never"
    show = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")  # noqa: E731
    return f"from {show(min(starts))} to {show(max(ends))} UTC"


def verdict(runs: list[dict], scenarios: list[str], trials: int, direction: str) -> str:
    """The target in one line: TPE beats the guide preset everywhere, and random sampling in most scenarios."""
    better = (lambda a, b: a < b) if direction == "minimize" else (lambda a, b: a > b)
    beats_guide, beats_random = [], []
    for scenario in scenarios:
        tpe = [r for r in runs if r["scenario"] == scenario and r["sampler"] == "tpe"]
        random = [r for r in runs if r["scenario"] == scenario and r["sampler"] == "random"]
        if all(r["best"][trials] is not None and r["baseline"] is not None and better(r["best"][trials], r["baseline"]) for r in tpe):
            beats_guide.append(scenario)
        tpe_median = _common.median_spread([r["best"][trials] for r in tpe if r["best"][trials] is not None])[0]
        random_median = _common.median_spread([r["best"][trials] for r in random if r["best"][trials] is not None])[0]
        if tpe_median is not None and random_median is not None and better(tpe_median, random_median):
            beats_random.append(scenario)
    met = len(beats_guide) == len(scenarios) and 2 * len(beats_random) > len(scenarios)
    return (f"**TPE's best after {trials} trials beats the guide preset in {len(beats_guide)} of {len(scenarios)} scenarios "
            f"in every seed, and beats random sampling's best after {trials} (median over the seeds) in {len(beats_random)} of "
            f"{len(scenarios)}: the target (every scenario; most) is {'met' if met else 'not met'}.**")


def one_study(scenario: str, sampler: str, seed: int, workload: dict, folder: str, quick: bool, trials: int,
              checkpoints: list[int]) -> dict:
    """One study (its own storage file, so parallel jobs never share one), run or resumed to
    ``trials``; its baseline and bests."""
    from lora_search import load_lora_study
    from lora_search.objectives import Workload

    _common.quiet_libraries()
    work = Workload.from_dict(workload)
    name = f"{scenario}.{sampler}.{seed}"
    storage = _common.search_storage(_common.Path(folder), name, quick)
    result = _common.search(scenario, work, storage, name, trials, sampler=sampler)
    data = result["trials"]
    windows = _common.trial_windows(load_lora_study(name, storage))
    # from the trials' own times, so a study resumed by a second run counts its whole span
    span = windows[-1][2] - windows[0][1] if windows else 0.0
    print(f"{name}: {span:.0f} s of trials ({result['wall_s']:.0f} s in this run)", file=sys.stderr, flush=True)
    return {
        "scenario": scenario, "sampler": sampler, "seed": seed, "pruner": result["pruner"], "wall_s": span,
        "first_start": windows[0][1] if windows else None, "last_end": windows[-1][2] if windows else None,
        "baseline": _common.baseline_value(data),
        "best": {k: _common.best_value(data, work.direction, first=k) for k in checkpoints},
        "examples": sum(t["examples"] for t in data),
        "trials": data,
    }


def spread(values: list[float], percent: bool = False) -> str | None:
    middle, low, high = _common.median_spread(values)
    if middle is None:
        return None
    show = (lambda v: f"{v:+.1%}") if percent else (lambda v: f"{v:.4f}")
    return show(middle) if len(values) == 1 else f"{show(middle)} [{show(low)} - {show(high)}]"


if __name__ == "__main__":
    sys.exit(main())
