"""lora-search train: a full LoRA training with a preset."""

from __future__ import annotations

import argparse

from ._options import add_workload_options, workload_options

DESCRIPTION = """\
Train for real with a preset: the whole training split, the preset's settings, the
best checkpoint kept, the adapter saved to --output, and a final evaluation printed.
The preset is a built-in name, an exported one (lora-search export) or a preset file.

An exported preset remembers the model and data of its study; the options below
override them (e.g. train the winner on a larger dataset).

examples:
  lora-search train --preset reviews-small-gpu --output out/reviews
  lora-search train --preset standard --model ./my-model --data train.csv \\
      --text-column text --label-column label --output out/standard
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, metavar="NAME|FILE", help="built-in or exported preset name, or a preset file")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for checkpoints and the final adapter")
    add_workload_options(parser)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ._presets import train_preset

    metrics = train_preset(args.preset, args.output, workload=workload_options(args))
    # train_with_preset's layout: adapter/ (load with PeftModel.from_pretrained), checkpoints/, training.json
    print(f"adapter saved to {Path(args.output) / 'adapter'} (settings and metrics in {Path(args.output) / 'training.json'})")
    print("final evaluation: " + json.dumps({key: round(value, 6) if isinstance(value, float) else value
                                              for key, value in metrics.items()}))
    return 0
