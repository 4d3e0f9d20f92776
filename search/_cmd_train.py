"""lora-search train: a full LoRA training with a preset."""

from __future__ import annotations

import argparse

from ._options import add_workload_options, workload_options
from ._tracking import add_report_to_option

DESCRIPTION = """\
Train for real with a preset: the whole training split (less the rows held out for
validation and test, if any), the preset's settings, the adapter saved to --output.
The validation split (--eval-split) picks the best
checkpoint and stops early; the test split (--test-split), which neither the search
nor the checkpoint choice sees, gives the score to compare. Both scores are printed.
The preset is a built-in name, an exported one (lora-search export) or a preset file;
a Hugging Face TrainingArguments/LoraConfig or axolotl config file is read as one too.

An exported preset remembers the model and data of its study; the options below
override them (e.g. train the winner on a larger dataset).

examples:
  lora-search train --preset reviews-small-gpu --output out/reviews
  lora-search train --preset standard --model ./my-model --data train.csv \\
      --text-column text --label-column label --output out/standard
"""

# what each split did in the run, printed with its scores
ROLES = {"validation": "chose the best checkpoint", "test": "the score to compare"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, metavar="NAME|FILE", help="built-in or exported preset name, or a preset file")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for checkpoints and the final adapter")
    add_report_to_option(parser, runs="The training is one run PRESET/OUTPUT-FOLDER-NAME in a group named after the "
                         "preset: its TrainingArguments, LoRA settings, training loss, evaluations and final scores.")
    add_workload_options(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ._presets import train_preset

    record = train_preset(args.preset, args.output, workload=workload_options(args), report_to=tuple(args.report_to or ()))
    # train_with_preset's layout: adapter/ (load with PeftModel.from_pretrained), checkpoints/, training.json
    output = Path(args.output)
    print(f"adapter saved to {output / 'adapter'} (settings, splits and metrics in {output / 'training.json'})")
    epochs = record["epochs"]
    best = "" if epochs["best_checkpoint"] is None else f", best checkpoint at epoch {epochs['best_checkpoint']:.3g}"
    print(f"trained {epochs['trained']:.3g} of {epochs['planned']:g} epochs{best}")
    for role, what in ROLES.items():
        split = record["splits"][role]
        scores = ", ".join(f"{name.removeprefix(role + '_')} {value:.4g}" for name, value in record["metrics"].items()
                           if name.startswith(role + "_"))
        print(f"{role} ({split['examples']:,} rows, {split['source']}; {what}): {scores}")
    return 0
