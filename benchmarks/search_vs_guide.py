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
    parser.add_argument("--train-sample", type=int, default=48, help="training examples per trial (full mode)")
    parser.add_argument("--eval-sample", type=int, default=48, help="evaluation examples per evaluation (full mode)")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per example (full mode)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    args = parser.parse_args(argv)
    from lora_search.spaces import scenario_names

    scenarios = args.scenarios.split(",") if args.scenarios else (["quick-experiment"] if args.quick else scenario_names())
    trials = args.trials or (3 if args.quick else 30)
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if int(c) < trials} | {trials})
    seeds = list(range(42, 42 + (args.seeds or (1 if args.quick else 3))))
    threads = args.threads or (1 if args.quick else 2)
    _common.quiet_libraries()

    runs = []
    with _common.scratch_folder() as scratch_name:
        scratch = _common.Path(scratch_name)
        fields = {"torch_threads": threads}
        if not args.quick:
            fields.update(train_sample=args.train_sample, eval_sample=args.eval_sample, max_length=args.max_length)
        base = _common.workload(args.quick, scratch, **fields)
        run = _common.Run("search_vs_guide", args.quick, {"scenarios": scenarios, "trials": trials, "checkpoints": checkpoints,
                                                          "seeds": seeds, "samplers": list(SAMPLERS), "workload": base.to_dict()})
        storage = _common.search_storage(scratch, "search_vs_guide", args.quick)
        for scenario in scenarios:
            for seed in seeds:
                for sampler in SAMPLERS:
                    work = base.replace(seed=seed)
                    result = _common.search(scenario, work, storage, f"{scenario}.{sampler}.{seed}", trials, sampler=sampler)
                    data = result["trials"]
                    runs.append({
                        "scenario": scenario, "sampler": sampler, "seed": seed, "pruner": result["pruner"], "wall_s": result["wall_s"],
                        "baseline": _common.baseline_value(data),
                        "best": {k: _common.best_value(data, work.direction, first=k) for k in checkpoints},
                        "examples": sum(t["examples"] for t in data),
                        "trials": data,
                    })
                    print(f"{scenario} {sampler} seed {seed}: {result['wall_s']:.0f} s", file=sys.stderr, flush=True)

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
        f"{base.evaluations_per_trial} evaluations per trial, {threads} torch threads; metric {base.metric} ({direction}); "
        f"{summary['total_trials']} trials in {summary['total_wall_s'] / 60:.0f} min. Cells: median [min - max] over the seeds; "
        f"gain = how much better than the same study's guide preset.\n\n"
        + _common.markdown_table(columns, rows)
    )
    _common.write(run.record([{k: v for k, v in r.items() if k != "trials"} for r in runs], summary), body, _common.results_folder(args))
    return 0


def spread(values: list[float], percent: bool = False) -> str | None:
    middle, low, high = _common.median_spread(values)
    if middle is None:
        return None
    show = (lambda v: f"{v:+.1%}") if percent else (lambda v: f"{v:.4f}")
    return show(middle) if len(values) == 1 else f"{show(middle)} [{show(low)} - {show(high)}]"


if __name__ == "__main__":
    sys.exit(main())
