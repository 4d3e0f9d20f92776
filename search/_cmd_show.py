"""lora-search show: one study's best trials next to its baseline."""

from __future__ import annotations

import argparse
import sys

from ._options import add_storage_option

DESCRIPTION = """\
Show one study: what it searches (space, model, data, metric), its trials by state,
the baseline (the scenario's guide preset, always trial 0 of a lora-search study) and
the top trials with their value, parameters, why they stopped and how many training
examples they saw.

examples:
  lora-search show memory-constrained.minilm.fine-food
  lora-search show memory-constrained.minilm.fine-food --top 10 --storage sqlite:///elsewhere.db
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY", help="study name (see 'lora-search studies')")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="how many of the best trials to show (default 5)")
    add_storage_option(parser)


def run(args: argparse.Namespace) -> int:
    from ._errors import UsageError
    from ._rungs import highest_entry, rung_record, rung_values, unfinished_rungs_note
    from ._study import ATTR_PRUNER, ATTR_SAMPLER, ATTR_SPACE, ATTR_WORKLOAD, load_lora_study, study_metric, study_rungs, trained_params
    from ._progress import format_params, format_value
    from ._trials import (baseline_trial, count_states, describe_stop, examples_seen, improvement, ranked_trials, standing_value,
                          trial_outcome)

    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    study = load_lora_study(args.study, args.storage)
    if (unfinished := unfinished_rungs_note(study)) is not None:
        print(unfinished, file=sys.stderr)
    metric, direction = study_metric(study)
    attrs = study.user_attrs
    workload = attrs[ATTR_WORKLOAD]
    trials = study.get_trials(deepcopy=False)
    print(f"study {study.study_name}")
    print(f"  space {attrs.get(ATTR_SPACE)}, model {workload.get('model') or 'embedded MiniLM'}, "
          f"data {workload.get('data') or 'embedded fine-food reviews'}")
    print(f"  {metric} ({direction}), sampler {attrs.get(ATTR_SAMPLER)}, pruner {attrs.get(ATTR_PRUNER)}")
    sizes = study_rungs(study)
    if len(sizes) > 1:
        print(f"  rungs: {', '.join(f'{size:,}' for size in sizes)} training examples (the trials are rung 0; after them the "
              "best quarter of each rung trains again at the next; the top rung, the best of the rung below and the baseline)")
    rungs = rung_record(attrs)
    print(f"  trials: {count_states(trials).as_text()}")

    def describe(trial) -> str:
        outcome = trial_outcome(trial)
        value = outcome
        if outcome == "complete":
            standing = standing_value(trial, rungs)
            value = f"{metric} {format_value(standing['value'])}{standing['fidelity']}"
            top = highest_entry(trial, rungs) if rungs else None
            others = [entry for entry in rung_values(trial, rungs) if top is not None and entry["rung"] != top["rung"]]
            if others:  # the rungs it climbed by, and one where it was infeasible
                value += " (" + ", ".join(f"rung {entry['rung']} " + (format_value(entry["value"]) if entry["value"] is not None
                                                                        else "infeasible") for entry in others) + ")"
        seen = examples_seen(trial)
        seen_text = f", {seen:,} examples seen" if seen is not None else ""
        return f"trial {trial.number}: {value} ({describe_stop(trial)}{seen_text})\n      {format_params(trained_params(trial))}"

    base = baseline_trial(trials)
    print("baseline (guide preset):")
    print(f"  {describe(base)}" if base is not None else "  none (the study was not started by lora-search run)")
    ranked = ranked_trials(trials, direction, rungs)
    if not ranked:
        print("no complete feasible trial yet")
        return 0
    print(f"top {min(args.top, len(ranked))} of {len(ranked)} complete feasible trials:")
    for rank, trial in enumerate(ranked[: args.top], start=1):
        gain = ""
        if base is not None and trial_outcome(base) == "complete" and trial is not base:
            ours, theirs = standing_value(trial, rungs), standing_value(base, rungs)
            if ours["fidelity"] == theirs["fidelity"]:  # compared only where both were measured the same way
                gain = f"  [{improvement(ours['value'], theirs['value'], direction)} vs baseline]"
        print(f"  {rank}. {describe(trial)}{gain}")
    return 0
