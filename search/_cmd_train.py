"""lora-search train: a full LoRA training with a preset."""

from __future__ import annotations

import argparse

from ._options import add_workload_options, path_text, workload_options
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

--fit-to-data applies the guide's rules for this training split and machine to the
preset first, as export does for a winner: a built-in preset is written for no dataset
in particular (quick-experiment: 1 epoch, evaluated every 100 steps), so a small dataset
may get one pass and a single evaluation at its end. Without the option, the
preset trains as written and the changes the fit would make are printed as a note.

On several GPUs, start one process per GPU (DistributedDataParallel):
  torchrun --nproc-per-node 8 $(which lora-search) train --preset NAME --output DIR
Each GPU takes the preset's per-device batch and accumulation, so an optimizer step
sees per-device x accumulation x GPUs examples (the effective batch as the guide
counts it). Rank 0 prints and writes the adapter and training.json. Started plainly,
the Trainer spreads each batch over all visible GPUs from one process
(nn.DataParallel), which is slower.

An interrupted training (Ctrl-C, a lost machine) resumes: the same command with the
same --output goes on from its last checkpoint. A folder holding a finished training
(training.json) or checkpoints of other settings or other data is refused.

examples:
  lora-search train --preset reviews-small-gpu --output out/reviews
  lora-search train --preset standard --model ./my-model --data train.csv \\
      --text-column text --label-column label --output out/standard
  lora-search train --preset quick-experiment --fit-to-data --output out/quick
"""

# what each split did in the run, printed with its scores
ROLES = {"validation": "chose the best checkpoint", "test": "the score to compare"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, metavar="NAME|FILE", help="built-in or exported preset name, or a preset file")
    parser.add_argument("--output", required=True, type=path_text, metavar="DIR", help="folder for checkpoints and the final adapter; "
                        "the same folder resumes an interrupted training")
    parser.add_argument("--fit-to-data", action="store_true",
                        help="re-derive what depends on the data size and hardware (epochs within the guide's band, "
                        "warmup, evaluation and checkpoint steps, early-stopping patience, per-device batch cap, "
                        "precision, gradient checkpointing) for this training split before training; learning rate, "
                        "effective batch, scheduler and LoRA settings stay as the preset has them")
    add_report_to_option(parser, runs="The training is one run PRESET/OUTPUT-FOLDER-NAME in a group named after the "
                         "preset: its TrainingArguments, LoRA settings, training loss, evaluations and final scores; a resumed "
                         "training goes on with its run (W&B: online only).")
    add_workload_options(parser, trials=False)


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    from pathlib import Path

    from ._presets import train_preset
    from .objectives import distributed_launch

    launch = distributed_launch()
    reports = launch is None or launch.rank == 0  # the other ranks train the same run
    try:
        record = train_preset(args.preset, args.output, workload=workload_options(args), fit_to_data=args.fit_to_data,
                              report_to=tuple(args.report_to or ()))
    except KeyboardInterrupt:
        if reports:
            print(f"lora-search train: interrupted; the same command resumes from the last checkpoint in "
                  f"{Path(args.output) / 'checkpoints'}", file=sys.stderr)
        return 130
    if reports:
        _report(args, record)
    if launch is not None:
        # the launch's process group is left open (objectives/_train.py: _leave_process_group):
        # end without the interpreter's teardown, whose gloo threads abort or hang now and then
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _report(args: argparse.Namespace, record: dict) -> None:
    """The training's summary on stdout: where the adapter is, how it trained, its scores."""
    from pathlib import Path

    # train_with_preset's layout: adapter/ (load with PeftModel.from_pretrained), checkpoints/, training.json
    output = Path(args.output)
    print(f"adapter saved to {output / 'adapter'} (settings, splits and metrics in {output / 'training.json'})")
    fitted = record["fitted"]
    if fitted["applied"]:
        print(f"fitted to the data: {len(fitted['changes'])} setting(s) changed ('fitted' in training.json)")
    epochs = record["epochs"]
    best = "" if epochs["best_checkpoint"] is None else f", best checkpoint at epoch {epochs['best_checkpoint']:.3g}"
    batch = record["batch"]
    devices = f" on {batch['devices']} devices" if batch["devices"] > 1 else ""
    print(f"trained {epochs['trained']:.3g} of {epochs['planned']:g} epochs ({batch['optimizer_steps']:,} optimizer steps of "
          f"{batch['examples_per_step']:,} examples{devices}){best}")
    for role, what in ROLES.items():
        split = record["splits"][role]
        scores = ", ".join(f"{name.removeprefix(role + '_')} {value:.4g}" for name, value in record["metrics"].items()
                           if name.startswith(role + "_"))
        print(f"{role} ({split['examples']:,} rows, {split['source']}; {what}): {scores}")
