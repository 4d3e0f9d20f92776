"""lora-search presets: the guide's built-in presets and the ones exported from studies."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
List the presets: the guide's built-in configurations (quick, standard, intensive and
one per scenario) and the ones exported from studies into studies/presets/. 'show'
prints one preset's settings, where it came from, and the exact TrainingArguments(...)
and LoraConfig(...) calls to use it in your own transformers + peft script.

examples:
  lora-search presets
  lora-search presets show memory-constrained
  lora-search presets show reviews-small-gpu
  lora-search presets show ./my-preset.yaml --task-type CAUSAL_LM
"""

# what an exported preset records beside its settings (see lora_search._presets)
EXPORT_RECORDS = ("trial_config", "rederived", "provenance")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("list", "show"), default="list", help="list (default) or show NAME")
    parser.add_argument("name", nargs="?", metavar="NAME|FILE", help="the preset to show")
    parser.add_argument("--task-type", choices=("SEQ_CLS", "CAUSAL_LM"),
                        help="peft task type for LoraConfig (default: the preset's study's task, else SEQ_CLS)")
    parser.add_argument("--output-dir", default="lora-output", help="output_dir shown in TrainingArguments (default lora-output)")


def run(args: argparse.Namespace) -> int:
    from ._errors import SearchError

    if args.action == "list":
        if args.name is not None:
            raise SearchError(f"unexpected {args.name!r}: did you mean 'lora-search presets show {args.name}'?")
        return _list()
    if args.name is None:
        raise SearchError("'presets show' needs a preset name or file (see 'lora-search presets')")
    return _show(args.name, args.task_type, args.output_dir)


def _list() -> int:
    """Exit 1 when an exported preset cannot be read: the others are listed, and stderr
    names each unreadable file with what is wrong in it."""
    import sys

    from ._presets import exported_preset_names, find_preset, presets_dir
    from .spaces import LoraSearchError, get_preset, preset_names

    print("built-in presets (the guide's configurations):")
    for name in preset_names():
        print(f"  {name:<20} {_brief(get_preset(name))}")
    exported = exported_preset_names()
    print(f"exported presets ({presets_dir()}):")
    if not exported:
        print("  none yet: lora-search export STUDY --name NAME")
    unreadable = 0
    for name in exported:
        try:
            preset = find_preset(name)
        except LoraSearchError as error:
            print(f"  {name:<20} unreadable (see below)")
            print(f"lora-search presets: {error}", file=sys.stderr)
            unreadable += 1
            continue
        origin = preset.provenance
        where = f"study {origin.get('study')}, trial {origin.get('trial')}, {origin.get('metric')} {origin.get('value'):.4g}" if origin.get("value") is not None else preset.source
        print(f"  {name:<20} {_brief(preset.config)}  [{where}]")
    return 1 if unreadable else 0


def _brief(config) -> str:
    epochs = config.num_train_epochs
    return (f"{epochs:g} epoch{'s' * (epochs != 1)}, batch {config.per_device_train_batch_size}x{config.gradient_accumulation_steps}, "
            f"lr {config.learning_rate:.2g}, r {config.lora.r}, {config.precision}")


def _show(name: str, task_type: str | None, output_dir: str) -> int:
    import yaml

    from ._presets import as_call, find_preset, lora_config_kwargs, training_arguments_kwargs

    preset = find_preset(name)
    print(f"preset {preset.name} ({preset.source})")
    body = {"config": preset.config.to_dict(),
            **{key: value for key, value in (preset.document or {}).items() if key in EXPORT_RECORDS}}
    print(yaml.safe_dump(body, sort_keys=False, default_flow_style=False).rstrip())
    print()
    print("from transformers import TrainingArguments")
    print("from peft import LoraConfig")
    print(as_call("TrainingArguments", training_arguments_kwargs(preset, output_dir)))
    print(as_call("LoraConfig", lora_config_kwargs(preset, task_type)))
    early = preset.config.early_stopping_kwargs()
    if early is not None:
        print(as_call("EarlyStoppingCallback", early))
    return 0
