"""Pruning pays: the same memory-constrained search with each pruner, compute vs result.

Every run is ``lora-search run --space memory-constrained`` with the same trials,
sampler (TPE), seed and workload; only ``--pruner`` changes. Per pruner and seed:
training examples of all trials together (the compute), wall time, the best value,
the guide baseline's value and how much better the best is. "Noise" is how much one
config's value moves when only the seed changes (data sample, initialisation, order):
each seed's no-pruning winner replayed with other seeds; a pruner whose best lies
within that distance of the no-pruning best found as good a config. With several
seeds the first table sums up each pruner over them (median and range), and the
verdict asks for the same result in every seed.

    python benchmarks/pruning.py            # 30 trials x 5 pruners x 3 seeds (see --help for the workload)
    python benchmarks/pruning.py --quick    # 3 trials x 2 pruners on a tiny model
"""

from __future__ import annotations

import statistics
import sys

import _common

FULL_PRUNERS = ("none", "median", "percentile", "successive-halving", "hyperband")
# A pruner "keeps the best" when its best value is at most this much (relative) worse than
# no pruning's in every seed: far below the seed-to-seed noise (several percent), so it
# asks for the same config or one as good, not merely one within noise.
KEEP_TOLERANCE = 0.01
QUICK_PRUNERS = ("none", "median")


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--trials", type=int, default=None, help="trials per pruner (default 30; 3 with --quick)")
    parser.add_argument("--pruners", default=None, help=f"comma-separated (default {','.join(FULL_PRUNERS)})")
    parser.add_argument("--seed", type=int, default=42, help="first workload and sampler seed, the same for every pruner")
    parser.add_argument("--seeds", type=int, default=None, help="seeds, from --seed on (default 3; 1 with --quick)")
    parser.add_argument("--noise-seeds", type=int, default=None, help="extra seeds each winner is replayed with (default 2; 1 with --quick)")
    parser.add_argument("--train-sample", type=int, default=32, help="training examples per trial (full mode)")
    parser.add_argument("--eval-sample", type=int, default=32, help="evaluation examples per evaluation (full mode)")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per example (full mode)")
    parser.add_argument("--evaluations-per-trial", type=int, default=None,
                        help="about how many evaluations (pruning decisions) a trial makes (default: the objective's, 4)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    parser.add_argument("--from-json", type=_common.Path, help="render a stored pruning.json again (no training)")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        record = _common.json.loads(args.from_json.read_text())
        _common.write(record, render(record), _common.results_folder(args) if args.results else args.from_json.parent)
        return 0
    trials = args.trials or (3 if args.quick else 30)
    pruners = args.pruners.split(",") if args.pruners else list(QUICK_PRUNERS if args.quick else FULL_PRUNERS)
    seeds = list(range(args.seed, args.seed + (args.seeds or (1 if args.quick else 3))))
    noise_seeds = args.noise_seeds if args.noise_seeds is not None else (1 if args.quick else 2)
    threads = args.threads or (1 if args.quick else 2)
    if "none" not in pruners:
        parser.error("--pruners must include none: it is the reference")
    _common.quiet_libraries()

    space = "memory-constrained"
    rows, noises = [], {}
    with _common.scratch_folder() as scratch_name:
        scratch = _common.Path(scratch_name)
        fields = {"torch_threads": threads}
        if args.evaluations_per_trial is not None:
            fields["evaluations_per_trial"] = args.evaluations_per_trial
        if not args.quick:
            fields.update(train_sample=args.train_sample, eval_sample=args.eval_sample, max_length=args.max_length)
        work = _common.workload(args.quick, scratch, **fields)
        run = _common.Run("pruning", args.quick, {"space": space, "trials": trials, "pruners": pruners, "sampler": "tpe",
                                                   "seeds": seeds, "workload": work.to_dict(), "noise_seeds": noise_seeds})
        storage = _common.search_storage(scratch, "pruning", args.quick)
        for seed in seeds:
            seed_rows, noises[str(seed)] = one_seed(space, work.replace(seed=seed), storage, trials, pruners, noise_seeds)
            rows += seed_rows
    summary = {"noise": noises, "metric": work.metric, "direction": work.direction,
               "by_pruner": by_pruner(rows, pruners, work.direction)}
    record = run.record(rows, summary)
    _common.write(record, render(record), _common.results_folder(args))
    return 0


def one_seed(space: str, work, storage: str, trials: int, pruners: list[str], noise_seeds: int) -> tuple[list[dict], dict]:
    """Every pruner's study at one seed; one row each, and the seed's noise yardstick."""
    from lora_search._engine import load_lora_study, stored_space, trial_config
    from lora_search.objectives import replay

    direction = work.direction
    runs = {}
    for pruner in pruners:
        name = f"pruning-{pruner}-{work.seed}"
        runs[pruner] = _common.search(space, work, storage, name, trials, sampler="tpe", pruner=pruner)
        print(f"seed {work.seed}, pruner {pruner}: {runs[pruner]['wall_s']:.0f} s", file=sys.stderr, flush=True)
    reference = runs["none"]["trials"]
    base_best = _common.best_value(reference, direction)
    winner = next(t for t in reference if t["value"] == base_best)
    study = load_lora_study(f"pruning-none-{work.seed}", storage)
    config = trial_config(stored_space(study), study.trials[winner["number"]])
    replays = [winner["value"]] + [replay(work.replace(seed=work.seed + 1 + i), config) for i in range(noise_seeds)]
    noise = max(replays) - min(replays)

    base_examples = sum(t["examples"] for t in reference)
    rows = []
    for pruner, result in runs.items():
        data = result["trials"]
        examples = sum(t["examples"] for t in data)
        best = _common.best_value(data, direction)
        baseline = _common.baseline_value(data)
        outcomes = [t["outcome"] for t in data]
        gain = _common.gain(best, baseline, direction)
        rows.append({
            "seed": work.seed,
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
            "gain": gain,
            "best_vs_baseline": f"{gain:+.1%}" if gain is not None else None,
            "best_minus_none": None if best is None else best - base_best,
            # minimize: no higher than no pruning's best; maximize: no lower
            "same_best": best is not None and (1 if direction == "minimize" else -1) * (best - base_best) <= 1e-12,
            "within_noise": best is not None and abs(best - base_best) <= noise,
        })
    return rows, {"noise": noise, "replays": replays, "winner_params": winner["params"]}


def by_pruner(rows: list[dict], pruners: list[str], direction: str) -> list[dict]:
    """Each pruner over the seeds: compute saved (median and range), how often it kept the best."""
    sign = 1 if direction == "minimize" else -1
    none_best = {r["seed"]: r["best"] for r in rows if r["pruner"] == "none"}
    summary = []
    for pruner in pruners:
        mine = [r for r in rows if r["pruner"] == pruner]
        # how much worse than no pruning's best, relative (0 = the same; negative = better)
        losses = [sign * r["best_minus_none"] / abs(none_best[r["seed"]]) if r["best"] is not None else float("inf") for r in mine]
        saved = [r["saved_share"] for r in mine]
        gains = [r["gain"] for r in mine if r["gain"] is not None]
        summary.append({
            "pruner": pruner,
            "seeds": len(mine),
            "saved_median": statistics.median(saved),
            "compute_saved": _spread(saved, "{:.0%}"),
            "wall_s": _spread([r["wall_s"] for r in mine], "{:.0f}"),
            "gain": _spread(gains, "{:+.1%}") if gains else None,
            "same_best": sum(r["same_best"] for r in mine),
            "within_noise": sum(r["within_noise"] for r in mine),
            "worst_loss": max(losses),
            "worst_loss_text": f"{max(losses):+.2%}",
            "keeps_best": max(losses) <= KEEP_TOLERANCE,
        })
        summary[-1]["same_best_seeds"] = f"{summary[-1]['same_best']}/{len(mine)}"
        summary[-1]["within_noise_seeds"] = f"{summary[-1]['within_noise']}/{len(mine)}"
    return summary


def _spread(values: list[float], form: str) -> str:
    middle, low, high = _common.median_spread(values)
    return form.format(middle) if len(values) == 1 else f"{form.format(middle)} [{form.format(low)} - {form.format(high)}]"


def render(record: dict) -> str:
    """The tables and the verdict, from a stored record (``--from-json`` renders one again)."""
    rows, summary, parameters = record["rows"], record["summary"], record["parameters"]
    work, seeds = parameters["workload"], parameters["seeds"]
    pruners = by_pruner(rows, parameters["pruners"], summary["direction"])
    candidates = [p for p in pruners if p["pruner"] != "none"]
    every = " in every seed" if len(seeds) > 1 else ""
    keeping = [p for p in candidates if p["keeps_best"] and p["saved_median"] > 0]
    meeting = [p for p in keeping if p["within_noise"] == p["seeds"] and p["saved_median"] >= 0.5]
    kept = f"a best value at most {KEEP_TOLERANCE:.0%} worse than no pruning's{every}"
    if meeting:
        pick = max(meeting, key=lambda p: p["saved_median"])
        verdict = (f"**The target is met; the table supports `{pick['pruner']}` as the default pruner**: of the pruners that "
                   f"saved at least half of the compute with {kept}, it saved the most ({pick['compute_saved']}).")
    elif keeping:
        pick = max(keeping, key=lambda p: p["saved_median"])
        verdict = (f"**No pruner met the target** (half of the compute saved with the best kept). Of the pruners with {kept}, "
                   f"`{pick['pruner']}` saved the most compute ({pick['compute_saved']}): **the table supports "
                   f"`{pick['pruner']}` as the default pruner.**")
    else:
        verdict = (f"**No pruner met the target, and none saved compute with {kept}**: the table supports no pruner over "
                   "another here.")
    noise = summary["noise"]
    noise_lines = "; ".join(
        f"seed {seed}: {info['noise']:.4f} ({', '.join(f'{v:.4f}' for v in info['replays'])})" for seed, info in noise.items()
    )
    return (
        f"`{parameters['space']}`, {parameters['trials']} trials per pruner and seed, TPE sampler, seeds "
        f"{', '.join(map(str, seeds))}; workload: train sample {work['train_sample']}, eval sample {work['eval_sample']}, max length "
        f"{work['max_length']}, {work['evaluations_per_trial']} evaluations per trial, {work['torch_threads']} torch threads; metric "
        f"{summary['metric']} ({summary['direction']}). Examples = training examples of all trials of a study together.\n\n"
        f"Over the seeds (median [min - max]; \"same best\" and \"within noise\" count the seeds):\n\n"
        + _common.markdown_table([("pruner", "pruner"), ("compute saved", "compute_saved"), ("wall s", "wall_s"),
                                  ("best vs baseline", "gain"), ("same best as none", "same_best_seeds"),
                                  ("worst seed: best worse than none's by", "worst_loss_text"),
                                  ("within noise", "within_noise_seeds")], pruners)
        + "\nEach study:\n\n"
        + _common.markdown_table([("seed", "seed"), ("pruner", "pruner"), ("complete", "complete"), ("pruned", "pruned"),
                                  ("infeasible", "infeasible"), ("examples trained", "examples"), ("compute saved", "compute_saved"),
                                  ("wall s", "wall_s"), ("best", "best"), ("guide baseline", "baseline"),
                                  ("best vs baseline", "best_vs_baseline"), ("best - best(none)", "best_minus_none"),
                                  ("within noise", "within_noise")], rows)
        + f"\nNoise: each seed's no-pruning winner replayed with the next seeds spans {noise_lines}; another seed also draws "
        "another data sample, so this is a generous yardstick.\n\n"
        + verdict + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
