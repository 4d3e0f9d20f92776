"""lora-search check: review a training config against the guide's common mistakes."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Review a preset or training-config YAML file against the guide's common mistakes:
batch too large for the GPU, learning rate too high or too low, no warmup, evaluating
too often, no early stopping, precision wrong for the hardware. One line per finding
with the rule behind it; exit code 0 when clean, 1 when something was found.

The file is a preset (what 'lora-search export' writes: 'training:' and 'lora:'
sections) or a flat mapping of TrainingConfig fields. A built-in preset name works too.

  lora-search check studies/presets/my-preset.yaml --gpu-memory 8GB
  lora-search check memory-constrained --gpu-memory 4GB
  lora-search check my-config.yaml --dataset-size 50000 --gpu-memory 24GB --bf16
"""


def configure(parser: argparse.ArgumentParser) -> None:
    from ._cmd_spaces import add_profile_options

    parser.add_argument("config", metavar="CONFIG", help="a preset/TrainingConfig YAML file, or a built-in preset name")
    add_profile_options(parser)


def run(args: argparse.Namespace) -> int:
    from ._cmd_spaces import profile_from_args
    from .spaces import check_config, get_preset, load_config_file, preset_names

    if not Path(args.config).exists() and args.config in preset_names():
        config = get_preset(args.config)
    else:
        config = load_config_file(args.config)
    profile = profile_from_args(args)
    findings = check_config(config, profile)
    if not findings:
        print(f"{args.config}: no common mistakes for {profile.describe()}")
        return 0
    for finding in findings:
        print(f"{args.config}: {finding.rule}: {finding.message}")
    print(f"{len(findings)} finding(s) for {profile.describe()}")
    return 1
