"""Pruning pays: the same memory-constrained search with each pruner, compute vs result.

Every run is ``lora-search run --space memory-constrained`` with the same trials,
sampler (TPE), seed and workload; only ``--pruner`` changes. Per pruner and seed:
training examples of all trials together (the compute), wall time (first trial start
to last trial end), the study's best value and how much better it is than the guide
baseline's.

A study's best value is the luckiest of its draws: the no-pruning study draws 30
complete values, a pruned one fewer, so comparing the two bests mixes the config's
quality with luck. Each seed's winners (one per pruner) are therefore trained again on
the same fresh seeds, which draw another data sample and another initialisation; a
pruner keeps the best when its winners, replayed, are on average at most 1% worse
than no pruning's winners replayed on the same seeds. The spread of no pruning's
winner over its replays is the noise.

A pruned study differs from no pruning's in two ways: the rule stops trials, and the
sampler, fed the shorter history, proposes other trials. The rule-alone table separates
the rule: no pruning's own learning curves are fed, trial by trial in their order,
through each pruner (in memory, no training), which tells what the rule alone would
save and whether it would stop the winner. Its ceiling row stops every trial but the
winner at its first evaluation: no rule comparing trials at evaluations saves more.

    python benchmarks/pruning.py            # 30 trials x 5 pruners x 5 seeds (see --help for the workload)
    python benchmarks/pruning.py --quick    # 3 trials x 2 pruners on a tiny model
"""

from __future__ import annotations

import json
import statistics
import sys

import _common

FULL_PRUNERS = ("none", "median", "percentile", "successive-halving", "hyperband")
# A pruner "keeps the best" when its winners, replayed on fresh seeds, are on average at
# most this much (relative) worse than no pruning's winners replayed on the same seeds.
KEEP_TOLERANCE = 0.01
QUICK_PRUNERS = ("none", "median")
# replay seeds sit this far above the study's seed, away from the other studies' seeds
REPLAY_SEED_OFFSET = 1000


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--trials", type=int, default=None, help="trials per pruner (default 30; 3 with --quick)")
    parser.add_argument("--pruners", default=None, help=f"comma-separated (default {','.join(FULL_PRUNERS)})")
    parser.add_argument("--seed", type=int, default=42, help="first workload and sampler seed, the same for every pruner")
    parser.add_argument("--seeds", type=int, default=None, help="seeds, from --seed on (default 5; 1 with --quick)")
    parser.add_argument("--replays", type=int, default=None,
                        help="fresh seeds every winner is trained again with (default 3; 1 with --quick)")
    parser.add_argument("--train-sample", type=int, default=32, help="training examples per trial (full mode)")
    parser.add_argument("--eval-sample", type=int, default=32, help="evaluation examples per evaluation (full mode)")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per example (full mode)")
    parser.add_argument("--evaluations-per-trial", type=int, default=None,
                        help="about how many evaluations (pruning decisions) a trial makes (default: the objective's, 4)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    parser.add_argument("--studies", type=_common.Path, metavar="DIR",
                        help="keep the study file (pruning.db) in DIR; run again to resume (default: a temporary folder)")
    parser.add_argument("--from-json", type=_common.Path, help="render a stored pruning.json again (no training)")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        record = json.loads(args.from_json.read_text())
        _common.write(record, render(record), _common.results_folder(args) if args.results else args.from_json.parent)
        return 0
    trials = args.trials or (3 if args.quick else 30)
    pruners = args.pruners.split(",") if args.pruners else list(QUICK_PRUNERS if args.quick else FULL_PRUNERS)
    seeds = list(range(args.seed, args.seed + (args.seeds or (1 if args.quick else 5))))
    replays = args.replays if args.replays is not None else (1 if args.quick else 3)
    threads = args.threads or (1 if args.quick else 2)
    if "none" not in pruners:
        parser.error("--pruners must include none: it is the reference")
    if replays < 1:
        parser.error("--replays must be at least 1: the verdict compares replayed winners")
    _common.quiet_libraries()

    space = "memory-constrained"
    rows, noises = [], {}
    with _common.studies_folder(args.studies) as studies:
        fields = {"torch_threads": threads}
        if args.evaluations_per_trial is not None:
            fields["evaluations_per_trial"] = args.evaluations_per_trial
        if not args.quick:
            fields.update(train_sample=args.train_sample, eval_sample=args.eval_sample, max_length=args.max_length)
        work = _common.workload(args.quick, studies, **fields)
        run = _common.Run("pruning", args.quick, {"space": space, "trials": trials, "pruners": pruners, "sampler": "tpe",
                                                   "seeds": seeds, "workload": work.to_dict(), "replays": replays})
        storage = _common.search_storage(studies, "pruning", args.quick)
        for seed in seeds:
            seed_rows, noises[str(seed)] = one_seed(space, work.replace(seed=seed), storage, trials, pruners, replays)
            rows += seed_rows
        curves = {str(seed): rule_alone(storage, f"pruning-none-{seed}", pruners) for seed in seeds}
    summary = {"noise": noises, "metric": work.metric, "direction": work.direction,
               "by_pruner": by_pruner(rows, pruners), "rule_alone": curves}
    record = run.record(rows, summary)
    _common.write(record, render(record), _common.results_folder(args))
    return 0


def one_seed(space: str, work, storage: str, trials: int, pruners: list[str], replays: int) -> tuple[list[dict], dict]:
    """Every pruner's study at one seed, its winner replayed; one row each, and the seed's noise."""
    from lora_search import load_lora_study, stored_space, trial_config
    from lora_search.objectives import LoraObjective, replay

    direction = work.direction
    sign = 1 if direction == "minimize" else -1
    runs, studies = {}, {}
    for pruner in pruners:
        name = f"pruning-{pruner}-{work.seed}"
        runs[pruner] = _common.search(space, work, storage, name, trials, sampler="tpe", pruner=pruner)
        studies[pruner] = load_lora_study(name, storage)
        windows = _common.trial_windows(studies[pruner])
        # from the trials' own times, so a study resumed by a second run counts its whole span
        runs[pruner]["span_s"] = windows[-1][2] - windows[0][1]
        print(f"seed {work.seed}, pruner {pruner}: {runs[pruner]['span_s']:.0f} s", file=sys.stderr, flush=True)

    replay_seeds = [work.seed + REPLAY_SEED_OFFSET + i for i in range(replays)]
    objectives = {seed: LoraObjective(work.replace(seed=seed)) for seed in replay_seeds}
    replayed: dict[str, list[float]] = {}  # winner params (as JSON) -> value per replay seed
    winners = {}
    for pruner, result in runs.items():
        best = _common.best_value(result["trials"], direction)
        winner = next(t for t in result["trials"] if t["value"] == best)
        key = json.dumps(winner["params"], sort_keys=True)
        if key not in replayed:
            study = studies[pruner]
            config = trial_config(stored_space(study), study.trials[winner["number"]])
            replayed[key] = [replay(objectives[seed].workload, config, objective=objectives[seed]) for seed in replay_seeds]
        winners[pruner] = (winner, replayed[key])
    reference_values = winners["none"][1]
    base_best = _common.best_value(runs["none"]["trials"], direction)
    noise_values = [base_best, *reference_values]
    base_examples = sum(t["examples"] for t in runs["none"]["trials"])

    rows = []
    for pruner, result in runs.items():
        data = result["trials"]
        examples = sum(t["examples"] for t in data)
        best = _common.best_value(data, direction)
        baseline = _common.baseline_value(data)
        outcomes = [t["outcome"] for t in data]
        gain = _common.gain(best, baseline, direction)
        winner, values = winners[pruner]
        # per replay seed, how much worse this winner is than no pruning's (relative; negative = better)
        losses = [sign * (mine - theirs) / abs(theirs) for mine, theirs in zip(values, reference_values)]
        rows.append({
            "seed": work.seed,
            "pruner": pruner,
            "complete": outcomes.count("complete"),
            "pruned": outcomes.count("pruned"),
            "infeasible": outcomes.count("infeasible"),
            "examples": examples,
            "compute_saved": f"{1 - examples / base_examples:.0%}",
            "saved_share": 1 - examples / base_examples,
            "wall_s": result["span_s"],
            "best": best,
            "baseline": baseline,
            "gain": gain,
            "best_vs_baseline": f"{gain:+.1%}" if gain is not None else None,
            "winner": winner["number"],
            "replayed": values,
            "replayed_mean": statistics.fmean(values),
            "replay_losses": losses,
            "replayed_vs_none": f"{statistics.fmean(losses):+.2%}",
            # minimize: no higher than no pruning's best; maximize: no lower
            "same_best": sign * (best - base_best) <= 1e-12,
        })
    return rows, {"noise": max(noise_values) - min(noise_values), "values": noise_values, "replay_seeds": replay_seeds,
                  "winner_params": winners["none"][0]["params"]}


def rule_alone(storage: str, study_name: str, pruners: list[str]) -> dict[str, dict]:
    """No pruning's trials, in their order, through each pruner's rule: compute saved, winner stopped or not.

    The trials' reported values are replayed into an in-memory study with the pruner the
    search would use; a trial stops at the first evaluation the pruner rejects (its
    examples up to that evaluation count), otherwise it runs to its last. "ceiling" stops
    every trial but the winner at its first evaluation.
    """
    import optuna

    from lora_search import load_lora_study, make_pruner

    study = load_lora_study(study_name, storage)
    trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if t.intermediate_values]  # infeasible trials never trained
    direction = "minimize" if study.direction == optuna.study.StudyDirection.MINIMIZE else "maximize"
    winner = (min if direction == "minimize" else max)(trials, key=lambda t: t.value)
    full = sum(max(t.intermediate_values) for t in trials)  # steps count training examples
    ceiling = sum(max(t.intermediate_values) if t is winner else min(t.intermediate_values) for t in trials)
    outcome = {"ceiling": {"saved_share": 1 - ceiling / full, "winner_kept": True, "stopped": len(trials) - 1}}
    # the search gives successive halving and Hyperband their first rung at the baseline's first report
    min_resource = min(trials[0].intermediate_values)
    for name in pruners:
        if name == "none":
            continue
        replay = optuna.create_study(direction=direction, pruner=make_pruner(name, direction, min_resource))
        trained, stopped, winner_kept = 0, 0, True
        for original in trials:
            trial = replay.ask()
            steps = sorted(original.intermediate_values)
            for step in steps:
                trial.report(original.intermediate_values[step], step)
                if step != steps[-1] and trial.should_prune():
                    replay.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    trained += step
                    stopped += 1
                    winner_kept = winner_kept and original is not winner
                    break
            else:
                replay.tell(trial, original.value)
                trained += steps[-1]
        outcome[name] = {"saved_share": 1 - trained / full, "winner_kept": winner_kept, "stopped": stopped}
    return outcome


def rule_alone_summary(curves: dict[str, dict]) -> list[dict]:
    """Each rule (and the ceiling) over the seeds: compute saved, seeds whose winner it let finish."""
    names = list(next(iter(curves.values())))
    summary = []
    for name in names:
        seeds = [by_name[name] for by_name in curves.values()]
        saved = [s["saved_share"] for s in seeds]
        summary.append({
            "rule": name,
            "saved_median": statistics.median(saved),
            "compute_saved": _spread(saved, "{:.0%}"),
            "stopped": _spread([s["stopped"] for s in seeds], "{:.0f}"),
            "kept_everywhere": all(s["winner_kept"] for s in seeds),
            "winner_kept": f"{sum(s['winner_kept'] for s in seeds)}/{len(seeds)}",
        })
    return summary


def by_pruner(rows: list[dict], pruners: list[str]) -> list[dict]:
    """Each pruner over the seeds: compute saved (median and range), how its winners replay."""
    summary = []
    for pruner in pruners:
        mine = [r for r in rows if r["pruner"] == pruner]
        saved = [r["saved_share"] for r in mine]
        gains = [r["gain"] for r in mine if r["gain"] is not None]
        losses = [loss for r in mine for loss in r["replay_losses"]]
        seed_losses = [statistics.fmean(r["replay_losses"]) for r in mine]
        mean_loss = statistics.fmean(losses)
        summary.append({
            "pruner": pruner,
            "seeds": len(mine),
            "saved_median": statistics.median(saved),
            "compute_saved": _spread(saved, "{:.0%}"),
            "wall_s": _spread([r["wall_s"] for r in mine], "{:.0f}"),
            "gain": _spread(gains, "{:+.1%}") if gains else None,
            "same_best_seeds": f"{sum(r['same_best'] for r in mine)}/{len(mine)}",
            "replay_loss": mean_loss,
            "replay_loss_text": f"{mean_loss:+.2%}",
            "worst_seed_loss_text": f"{max(seed_losses):+.2%}",
            "keeps_best": mean_loss <= KEEP_TOLERANCE,
        })
    return summary


def _spread(values: list[float], form: str) -> str:
    middle, low, high = _common.median_spread(values)
    return form.format(middle) if len(values) == 1 else f"{form.format(middle)} [{form.format(low)} - {form.format(high)}]"


def render(record: dict) -> str:
    """The tables and the verdict, from a stored record (``--from-json`` renders one again)."""
    rows, summary, parameters = record["rows"], record["summary"], record["parameters"]
    work, seeds = parameters["workload"], parameters["seeds"]
    pruners = by_pruner(rows, parameters["pruners"])
    candidates = [p for p in pruners if p["pruner"] != "none"]
    keeping = [p for p in candidates if p["keeps_best"] and p["saved_median"] > 0]
    meeting = [p for p in keeping if p["saved_median"] >= 0.5]
    kept = f"winners that replay at most {KEEP_TOLERANCE:.0%} worse than no pruning's on average"
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
    rules = rule_alone_summary(summary["rule_alone"])
    if not meeting:
        safe = [r for r in rules[1:] if r["kept_everywhere"]]
        if safe:
            best_rule = max(safe, key=lambda r: r["saved_median"])
            verdict += (f" Even without the sampler's reaction, on no pruning's own curves, the rule that saves the most "
                        f"while letting the winner finish at every seed, `{best_rule['rule']}`, saves "
                        f"{best_rule['compute_saved']}, against a ceiling of {rules[0]['compute_saved']}.")
    noise_lines = "; ".join(
        f"seed {seed}: {info['noise']:.4f} ({', '.join(f'{v:.4f}' for v in info['values'])})"
        for seed, info in summary["noise"].items()
    )
    replay_seeds = ", ".join(str(s - seeds[0]) for s in summary["noise"][str(seeds[0])]["replay_seeds"])
    return (
        f"`{parameters['space']}`, {parameters['trials']} trials per pruner and seed, TPE sampler, seeds "
        f"{', '.join(map(str, seeds))}; workload: train sample {work['train_sample']}, eval sample {work['eval_sample']}, max length "
        f"{work['max_length']}, {work['evaluations_per_trial']} evaluations per trial, {work['torch_threads']} torch threads; metric "
        f"{summary['metric']} ({summary['direction']}). Examples = training examples of all trials of a study together. "
        f"Each winner is replayed with {parameters['replays']} fresh seeds (the study's seed + {replay_seeds}), the same for "
        "every pruner of a seed.\n\n"
        "Over the seeds (median [min - max]; \"replayed\": how much worse the pruner's winners are than no pruning's, "
        "trained again on the same fresh seeds, mean over seeds and replays; negative is better):\n\n"
        + _common.markdown_table([("pruner", "pruner"), ("compute saved", "compute_saved"), ("wall s", "wall_s"),
                                  ("study best vs baseline", "gain"), ("same study best as none", "same_best_seeds"),
                                  ("winner replayed vs none's", "replay_loss_text"),
                                  ("worst seed", "worst_seed_loss_text")], pruners)
        + "\nEach study:\n\n"
        + _common.markdown_table([("seed", "seed"), ("pruner", "pruner"), ("complete", "complete"), ("pruned", "pruned"),
                                  ("infeasible", "infeasible"), ("examples trained", "examples"), ("compute saved", "compute_saved"),
                                  ("wall s", "wall_s"), ("best", "best"), ("guide baseline", "baseline"),
                                  ("best vs baseline", "best_vs_baseline"), ("winner", "winner"),
                                  ("winner replayed (mean)", "replayed_mean"), ("replayed vs none's", "replayed_vs_none")], rows)
        + "\nThe rule alone, on no pruning's own curves (the same trials in the same order, fed through each pruner "
        "without training; \"ceiling\" stops every trial but the winner at its first evaluation):\n\n"
        + _common.markdown_table([("rule", "rule"), ("compute saved", "compute_saved"), ("trials stopped", "stopped"),
                                  ("winner runs to the end", "winner_kept")], rules)
        + f"\nNoise: no pruning's winner, its study value and its replays, spans {noise_lines}.\n\n"
        + verdict + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
