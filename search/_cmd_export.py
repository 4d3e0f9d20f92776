"""lora-search export: keep a study's best trial as a named preset."""

from __future__ import annotations

import argparse
import sys

from ._options import add_storage_option

DESCRIPTION = """\
Write a study's best trial as a named preset, studies/presets/NAME.yaml (or .json):
the complete training and LoRA settings, ready for 'lora-search train --preset NAME'.

A trial trained on a sample, so the settings whose meaning changes with scale
(epochs, warmup, evaluation and checkpoint cadence, early-stopping patience, which
counts evaluations, and precision for the hardware) are re-derived with the guide's
rules for the full training split; each change is printed as
"field: trial value -> full-run value (reason)". The file records both values and
the reason for each, plus where the preset came from: study, trial, metric and
value, the baseline's value, model, data, library versions and date.

--format names the file: lora-search (the same as yaml) or json for a lora-search
preset, or the config file another trainer loads, written to studies/exports/:
  hf             NAME.hf.json: {"training_arguments": {...}, "lora_config": {...},
                 "early_stopping": {...}}, for TrainingArguments(**doc["training_arguments"])
                 (the installed transformers' names), LoraConfig(**doc["lora_config"]) and,
                 with a patience above 0, EarlyStoppingCallback(**doc["early_stopping"])
  axolotl        NAME.axolotl.yaml: axolotl's keys (micro_batch_size, num_epochs, lora_r, ...)
  llama-factory  NAME.llama-factory.yaml: LLaMA-Factory's keys (finetuning_type: lora,
                 lora_rank, lora_target, ...)
The 'attention' target (peft's default for the architecture: query and value on BERT,
q_proj and v_proj on Llama) is written as those module names for the study's model.
lora-search check and train --preset read hf and axolotl files back (axolotl has no
early-stopping threshold, nor eval_steps beside evals_per_epoch: they read back as
the defaults).

An existing file is kept unless --force; the file is written to a temporary name
and renamed, so a failed export never damages a preset.

examples:
  lora-search export memory-constrained.minilm.fine-food --name reviews-small-gpu
  lora-search export memory-constrained.minilm.fine-food --name reviews --top 3
      (writes reviews-1, reviews-2, reviews-3: the three best trials)
  lora-search export my-study --name my-preset --format json --force
  lora-search export my-study --name trial-7 --trial 7
      (trial 7 whatever its rank: any complete trial)
  lora-search export my-study --name my-preset --format axolotl
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY", help="study name (see 'lora-search studies')")
    parser.add_argument("--name", required=True, help="preset name: letters, digits, '-', '_', '.'")
    parser.add_argument("--top", type=int, default=1, metavar="K",
                        help="export the K best trials as NAME-1..NAME-K (default 1: the best, as NAME)")
    parser.add_argument("--trial", type=int, default=None, metavar="N",
                        help="export trial N instead of the best (any complete feasible trial)")
    parser.add_argument("--format", choices=("lora-search", "yaml", "json", "hf", "axolotl", "llama-factory"), default="yaml",
                        help="file format (default yaml: a lora-search preset; see above)")
    parser.add_argument("--force", action="store_true", help="replace an existing preset of that name")
    add_storage_option(parser)


def run(args: argparse.Namespace) -> int:
    from ._errors import PresetError, UsageError
    from ._presets import check_preset_name, existing_export
    from ._progress import format_value
    from ._rungs import unfinished_rungs_note
    from ._study import load_lora_study
    from .spaces import RunProfile, preset_names

    check_preset_name(args.name)
    if args.name in preset_names():
        raise PresetError(f"{args.name!r} is a built-in preset: choose another --name")
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    if args.trial is not None and args.top != 1:
        raise UsageError("--trial exports one trial: drop --top")
    fmt = "yaml" if args.format == "lora-search" else args.format
    names = [args.name] if args.top == 1 else [f"{args.name}-{rank}" for rank in range(1, args.top + 1)]
    for name in names:
        existing = existing_export(name, fmt)
        if existing is not None and not args.force:
            raise PresetError(f"preset {name!r} already exists at {str(existing)!r}: pass --force to replace it, or choose another --name")
    exported = export_study(args.study, names, storage=args.storage, fmt=fmt, force=args.force, trial=args.trial)
    if (unfinished := unfinished_rungs_note(load_lora_study(args.study, args.storage))) is not None:
        print(unfinished, file=sys.stderr)
    for rank, (path, document) in enumerate(exported):
        changes, provenance = document["rederived"], document["provenance"]
        run = f"the full run ({RunProfile(**provenance['profile']).describe()})"
        source = f", {provenance['value_source']}" if provenance["value_source"] else ""
        value = f"trial {provenance['trial']}, {provenance['metric']} {format_value(provenance['value'])}{source}"
        print(f"wrote {path}: {value}\n  " + (f"re-derived for {run}:" if changes else f"{run} keeps every setting of the trial"))
        for field, change in changes.items():
            print(f"  {field}: {change['trial']} -> {change['full']} ({change['reason']})")
        if provenance["trial"] == provenance["baseline_trial"] and provenance["baseline_preset"]:
            guide = provenance["baseline_preset"]
            # chosen as the best, not asked for by --trial nor a runner-up of --top
            verdict = ": the search found nothing better" if rank == 0 and args.trial is None else ""
            if provenance["baseline_fitted"]:
                print(f"note: trial {provenance['trial']} is the baseline, the guide preset {guide!r} fitted to the data"
                      f"{verdict}; lora-search train --preset {guide} --fit-to-data trains the same", file=sys.stderr)
            else:  # a baseline queued before 2026-11-29 trained the preset moved into the space's ranges
                print(f"note: trial {provenance['trial']} is the baseline, the guide preset {guide!r} as the space holds it"
                      f"{verdict}. The preset itself, fitted to the data: lora-search train --preset {guide} --fit-to-data",
                      file=sys.stderr)
    if fmt in ("yaml", "json"):
        print(f"train with it: lora-search train --preset {names[0]} --output out/{names[0]}")
    return 0


def export_study(study_name: str, names: list[str], *, storage: str | None = None, fmt: str = "yaml",
                 force: bool = False, trial: int | None = None) -> list[tuple[str, dict]]:
    """Export the ``len(names)`` best trials of a study, or trial number ``trial`` as ``names[0]``;
    returns (path, document) pairs."""
    from ._errors import PresetError, SearchError
    from ._presets import write_preset
    from ._rungs import rung_record
    from ._study import load_lora_study, stored_space, study_metric
    from ._trials import ranked_trials

    study = load_lora_study(study_name, storage)
    metric, direction = study_metric(study)
    if trial is not None:
        chosen = _exportable_trial(study, trial)
        document = preset_document(study, chosen, names[0], stored_space(study))
        return [(str(write_preset(names[0], document, fmt=fmt, force=force)), document)]
    ranked = ranked_trials(study.get_trials(deepcopy=False), direction, rung_record(study.user_attrs))
    if not ranked:
        raise SearchError(
            f"study {study_name!r} has no complete feasible trial to export yet: "
            f"run more trials (lora-search run --study {study_name} --trials N)"
        )
    if len(ranked) < len(names):
        raise SearchError(f"study {study_name!r} has only {len(ranked)} complete feasible trials, --top asks for {len(names)}")
    resolved = stored_space(study)
    documents = [(name, preset_document(study, trial, name, resolved)) for name, trial in zip(names, ranked)]
    written: list[tuple[str, dict]] = []
    for name, document in documents:
        try:
            written.append((str(write_preset(name, document, fmt=fmt, force=force)), document))
        except PresetError as error:
            if not written:
                raise
            # each file is whole (written aside, then renamed), but the set is not: say which are there
            raise PresetError(f"{error}; {', '.join(path for path, _ in written)} written before it: the same command "
                              "with --force writes the whole set") from None
    return written


def _exportable_trial(study, number: int):
    """Trial ``number`` if it has a value to stand on: complete and feasible."""
    from ._errors import SearchError
    from ._trials import describe_stop, trial_outcome

    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise SearchError(f"study {study.study_name!r} has no trial {number} (trials 0 to {len(trials) - 1}; see lora-search show)")
    trial = trials[number]
    outcome = trial_outcome(trial)
    if outcome == "complete" and trial.value is not None:
        return trial
    raise SearchError(f"trial {number} of study {study.study_name!r} has no finished value to export ({describe_stop(trial)}): "
                      "choose a complete trial (see lora-search show)")


def _trial_value(trial, rungs) -> tuple[float, str | None]:
    """The value a trial stands on and where it comes from: in a study with rungs, its value
    at the highest rung it trained at."""
    from ._trials import standing_value

    standing = standing_value(trial, rungs)
    source = "best evaluation" + standing["fidelity"] if standing["fidelity"] else trial.user_attrs.get("value_source")
    return standing["value"], source


def preset_document(study, trial, name: str, resolved) -> dict:
    """The exported file's content for one trial of a study."""
    import dataclasses
    from datetime import datetime, timezone

    from ._rungs import rung_record
    from ._study import ATTR_SPACE, ATTR_TASK, ATTR_WORKLOAD, TRIAL_GUIDE_CONFIG, full_run_config, study_metric, trial_config
    from ._trials import baseline_trial, plain
    metric, direction = study_metric(study)
    ran_with = trial_config(resolved, trial)
    full, reasons = full_run_config(resolved, trial)
    trial_values, full_values = ran_with.flat(), full.flat()
    rederived = {
        key: {"trial": trial_values.get(key), "full": full_values.get(key), "reason": reasons.get(key, "")}
        for key in full_values
        if trial_values.get(key) != full_values.get(key) or key in reasons
    }
    base = baseline_trial(study.get_trials(deepcopy=False))
    workload = study.user_attrs[ATTR_WORKLOAD]
    rungs = rung_record(study.user_attrs)
    value, value_source = _trial_value(trial, rungs)
    baseline_value = _trial_value(base, rungs)[0] if base is not None and base.value is not None else None
    return plain({
        "name": name,
        "config": full.to_dict(),
        "trial_config": ran_with.to_dict(),
        "rederived": rederived,
        "provenance": {
            "study": study.study_name,
            "trial": trial.number,
            "params": dict(trial.params),
            "metric": metric,
            "direction": direction,
            "value": value,
            "value_source": value_source,
            "proxy_value": trial.value,
            "baseline_value": baseline_value,
            "baseline_trial": base.number if base is not None else None,
            "baseline_preset": base.user_attrs.get("preset") if base is not None else None,
            # the baseline trained the preset itself fitted to the data, not its nearest point in the space
            "baseline_fitted": base is not None and TRIAL_GUIDE_CONFIG in base.user_attrs,
            "space": study.user_attrs.get(ATTR_SPACE),
            "model": workload.get("model") or "embedded all-MiniLM-L6-v2",
            "data": workload.get("data") or "embedded fine-food reviews",
            "task": study.user_attrs.get(ATTR_TASK) or workload.get("task"),
            "workload": workload,
            "profile": dataclasses.asdict(resolved.profile),
            "versions": library_versions(),
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    })


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("lora-search", "optuna", "transformers", "peft", "torch"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
