"""Pruning pays: the same memory-constrained search with each pruner, compute vs result.

Every run is ``lora-search run --space memory-constrained`` with the same trials,
sampler (TPE), seed and workload; only ``--pruner`` changes. Per pruner: training
examples of all trials together (the compute), wall time, the best value, the guide
baseline's value and how much better the best is. "Noise" is how much one config's
value moves when only the seed changes (data sample, initialisation, order): the
no-pruning winner replayed with other seeds; a pruner whose best lies within that
distance of the no-pruning best found as good a config.

    python benchmarks/pruning.py            # 30 trials x 4 pruners (see --help for the workload)
    python benchmarks/pruning.py --quick    # 3 trials x 2 pruners on a tiny model
"""

from __future__ import annotations

import sys

import _common

FULL_PRUNERS = ("none", "median", "patient", "hyperband")
QUICK_PRUNERS = ("none", "median")


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--trials", type=int, default=None, help="trials per pruner (default 30; 3 with --quick)")
    parser.add_argument("--pruners", default=None, help=f"comma-separated (default {','.join(FULL_PRUNERS)})")
    parser.add_argument("--seed", type=int, default=42, help="workload and sampler seed, the same for every pruner")
    parser.add_argument("--noise-seeds", type=int, default=None, help="extra seeds the no-pruning winner is replayed with (default 2; 1 with --quick)")
    parser.add_argument("--train-sample", type=int, default=64, help="training examples per trial (full mode)")
    parser.add_argument("--eval-sample", type=int, default=64, help="evaluation examples per evaluation (full mode)")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per example (full mode)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    parser.add_argument("--from-json", type=_common.Path, help="render a stored pruning.json again (no training)")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        record = _common.json.loads(args.from_json.read_text())
        _common.write(record, render(record), _common.results_folder(args) if args.results else args.from_json.parent)
        return 0
    trials = args.trials or (3 if args.quick else 30)
    pruners = args.pruners.split(",") if args.pruners else list(QUICK_PRUNERS if args.quick else FULL_PRUNERS)
    noise_seeds = args.noise_seeds if args.noise_seeds is not None else (1 if args.quick else 2)
    threads = args.threads or (1 if args.quick else 2)
    if "none" not in pruners:
        parser.error("--pruners must include none: it is the reference")
    _common.quiet_libraries()

    from lora_search._engine import stored_space, trial_config, load_lora_study
    from lora_search.objectives import replay

    space = "memory-constrained"
    with _common.scratch_folder() as scratch_name:
        scratch = _common.Path(scratch_name)
        fields = {"torch_threads": threads, "seed": args.seed}
        if not args.quick:
            fields.update(train_sample=args.train_sample, eval_sample=args.eval_sample, max_length=args.max_length)
        work = _common.workload(args.quick, scratch, **fields)
        run = _common.Run("pruning", args.quick, {"space": space, "trials": trials, "pruners": pruners, "sampler": "tpe",
                                                   "workload": work.to_dict(), "noise_seeds": noise_seeds})
        storage = _common.search_storage(scratch, "pruning", args.quick)
        direction = work.direction
        runs = {}
        for pruner in pruners:
            runs[pruner] = _common.search(space, work, storage, f"pruning-{pruner}", trials, sampler="tpe", pruner=pruner)
            print(f"pruner {pruner}: {runs[pruner]['wall_s']:.0f} s", file=sys.stderr, flush=True)

        reference = runs["none"]["trials"]
        winner = next(t for t in reference if t["value"] == _common.best_value(reference, direction))
        study = load_lora_study("pruning-none", storage)
        config = trial_config(stored_space(study), study.trials[winner["number"]])
        replays = [winner["value"]] + [replay(work.replace(seed=args.seed + 1 + i), config) for i in range(noise_seeds)]
    noise = max(replays) - min(replays)

    base_examples = sum(t["examples"] for t in reference)
    base_best = _common.best_value(reference, direction)
    rows = []
    for pruner, result in runs.items():
        data = result["trials"]
        examples = sum(t["examples"] for t in data)
        best = _common.best_value(data, direction)
        baseline = _common.baseline_value(data)
        outcomes = [t["outcome"] for t in data]
        rows.append({
            "pruner": pruner,
            "complete": outcomes.count("complete"),
            "pruned": outcomes.count("pruned"),
            "infeasible": outcomes.count("infeasible"),
            "examples": examples,
            "compute_saved": f"{1 - examples / base_examples:.0%}",
            "saved_share": 1 - examples / base_examples,
            "wall_s": result["wall_s"],
            "best": best,
            "baseline": baseline,
            "best_vs_baseline": f"{_common.gain(best, baseline, direction):+.1%}" if best is not None and baseline else None,
            "best_minus_none": None if best is None else best - base_best,
            "within_noise": best is not None and abs(best - base_best) <= noise,
        })
    summary = {"noise": noise, "replays": replays, "winner_params": winner["params"], "metric": work.metric, "direction": direction}
    record = run.record(rows, summary)
    _common.write(record, render(record), _common.results_folder(args))
    return 0


def render(record: dict) -> str:
    """The table and the verdict, from a stored record (``--from-json`` renders one again)."""
    rows, summary, parameters = record["rows"], record["summary"], record["parameters"]
    work = parameters["workload"]
    noise, replays = summary["noise"], summary["replays"]
    meeting = [r for r in rows if r["pruner"] != "none" and r["within_noise"] and r["saved_share"] >= 0.5]
    # minimize: a best no higher than no pruning's; maximize: no lower
    sign = 1 if summary["direction"] == "minimize" else -1
    same_best = [r for r in rows if r["pruner"] != "none" and r["saved_share"] > 0
                 and r["best_minus_none"] is not None and sign * r["best_minus_none"] <= 1e-12]
    if meeting:
        pick = max(meeting, key=lambda r: r["saved_share"])
        verdict = (f"**The table supports `{pick['pruner']}` as the default pruner**: of the pruners that saved at least half "
                   f"of the compute with the best value within noise, it saved the most ({pick['compute_saved']}).")
    elif same_best:
        pick = max(same_best, key=lambda r: r["saved_share"])
        verdict = (f"**No pruner met the target** (half of the compute saved, best within noise). Of the pruners that found "
                   f"the same best value as no pruning, `{pick['pruner']}` saved the most compute ({pick['compute_saved']}): "
                   f"**the table supports `{pick['pruner']}` as the default pruner.**")
    else:
        verdict = ("**No pruner met the target, and none saved compute while finding the same best as no pruning**: the "
                   "table supports no pruner over another here.")
    return (
        f"`{parameters['space']}`, {parameters['trials']} trials per pruner, TPE sampler, seed {work['seed']}; workload: train sample "
        f"{work['train_sample']}, eval sample {work['eval_sample']}, max length {work['max_length']}, "
        f"{work['evaluations_per_trial']} evaluations per trial, {work['torch_threads']} torch threads; metric {summary['metric']} "
        f"({summary['direction']}). Examples = training examples of all trials together.\n\n"
        + _common.markdown_table([("pruner", "pruner"), ("complete", "complete"), ("pruned", "pruned"), ("infeasible", "infeasible"),
                                  ("examples trained", "examples"), ("compute saved", "compute_saved"), ("wall s", "wall_s"),
                                  ("best", "best"), ("guide baseline", "baseline"), ("best vs baseline", "best_vs_baseline"),
                                  ("best - best(none)", "best_minus_none"), ("within noise", "within_noise")], rows)
        + f"\nNoise: the no-pruning winner's value spans {noise:.4f} over seeds "
        f"{', '.join(str(work['seed'] + i) for i in range(len(replays)))} ({', '.join(f'{v:.4f}' for v in replays)}); "
        "another seed also draws another data sample, so this is a generous yardstick.\n\n"
        + verdict + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
