"""lora-search check: review a training config against the guide's common mistakes."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Review a preset or training config against the guide's common mistakes:
batch too large for the GPU, learning rate too high or too low (for the model's size
with --model-parameters), no warmup, evaluating too often, no early stopping or a
patience that cannot fire, precision the hardware cannot run. One line per finding
with the rule behind it; exit code 0 when clean, 1 when something was found.

CONFIG is a preset name (built-in or exported) or a YAML/JSON file: an exported
preset (what 'lora-search export' writes), a built-in's 'training:' and 'lora:'
sections, a flat mapping of TrainingConfig fields, or another trainer's config: a
Hugging Face TrainingArguments file (with peft LoraConfig keys beside it or under
lora_config:) or an axolotl YAML. Keys that mean nothing to lora-search's settings
(model, data, output folder, seed, ...) are ignored; unknown keys are all named.
An exported preset is judged for the training rows and model size it recorded, unless
--dataset-size or --model-parameters say otherwise; the hardware is this machine's or
the options'.

  lora-search check studies/presets/my-preset.yaml --gpu-memory 8GB
  lora-search check memory-constrained --gpu-memory 4GB
  lora-search check my-config.yaml --dataset-size 50000 --gpu-memory 24GB --bf16
"""


def configure(parser: argparse.ArgumentParser) -> None:
    from ._cmd_spaces import add_profile_options

    parser.add_argument("config", metavar="CONFIG", help="a preset name, or a preset, TrainingConfig, Hugging Face or axolotl YAML/JSON file")
    add_profile_options(parser)


def run(args: argparse.Namespace) -> int:
    from ._cmd_spaces import profile_from_args
    from ._presets import find_preset
    from .spaces import check_config

    preset = find_preset(args.config)
    config = preset.config
    # an exported preset was searched on known data and model: judge it for them unless told otherwise
    profile = profile_from_args(args, recorded=preset.provenance.get("profile"))
    findings = check_config(config, profile)
    if not findings:
        print(f"{args.config}: no common mistakes for {profile.describe()}")
        return 0
    for finding in findings:
        print(f"{args.config}: {finding.rule}: {finding.message}")
    print(f"{len(findings)} finding(s) for {profile.describe()}")
    return 1
