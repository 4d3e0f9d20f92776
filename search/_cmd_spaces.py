"""lora-search spaces: list the scenario spaces, show one fitted to a run, suggest one."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spaces import RunProfile

DESCRIPTION = """\
The five scenarios of the parameter guide, each a constrained Optuna search space:
ranges for what is searched, and the guide's rules for what follows from the data size
and the hardware (epochs band, per-device batch row, learning rate by model size, warmup
by total steps, evaluation cadence, precision, gradient checkpointing).

  lora-search spaces                                  list the scenarios
  lora-search spaces show memory-constrained --gpu-memory 4GB
  lora-search spaces show ./my-space.yaml --dataset-size 50000 --gpu-memory 16GB --no-bf16
  lora-search spaces show standard --gpu-memory 80GB --model-parameters 13B
  lora-search spaces show memory-constrained --gpu-memory 8GB --model-parameters 7B   (a 4-bit base)
  lora-search spaces suggest --gpu-memory 8GB --hours 1

A space file of your own may start with 'extends: memory-constrained' and change a few
parameters, or its study defaults ('study:' with trials, timeout, pruner, rungs); 'show'
validates it and prints what a search would sample. Each parameter is fixed, chosen,
ranged or derived by one of the guide's rules (a rule beside a range narrows it):

  extends: memory-constrained          # else every parameter starts fixed at its default
  study: {trials: 20, timeout: 1h}
  constraints:
    effective_batch_size: {low: 16, high: 32}      # per-device x accumulation x devices
  training:
    learning_rate: {low: 1.0e-4, high: 1.0e-3, log: true, rule: model-size}
    lr_scheduler_type: {choices: [linear, cosine]}
    warmup_ratio: {rule: total-steps}
  lora:
    r: {choices: [8, 16, 32]}
    lora_dropout: {low: 0.0, high: 0.1, step: 0.05}  # a step divides its range
    use_rslora: false

'spaces show NAME' lists every parameter and rule; spaces/scenarios/*.yaml say why each
scenario's numbers are what they are.
"""

DEFAULT_DATASET_SIZE = 3200  # the embedded reviews' training rows: 4,000 less the 800 held out for validation


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    """The options that describe the run a space or config is fitted to."""
    group = parser.add_argument_group("the run (default: this machine's hardware, detected)")
    group.add_argument("--dataset-size", type=int, metavar="N",
                       help=f"training examples in the full training split (default {DEFAULT_DATASET_SIZE:,}, the embedded reviews' "
                       "once validation is held out; for an exported preset, check takes the size it recorded)")
    group.add_argument("--gpu-memory", metavar="SIZE", help="memory of one GPU, e.g. 8GB or 8192MiB; a bare number is GB "
                       "(implies a CUDA run)")
    group.add_argument("--devices", type=int, metavar="N", help="GPUs training together (default 1; needs --gpu-memory)")
    group.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="whether the GPU computes in bf16 (default with --gpu-memory: yes from 16 GB, as the guide's "
                            "16 and 24 GB configs, else no; --no-bf16 for a V100, T4 or RTX 20)")
    group.add_argument("--cpu", action="store_true", help="a CPU run (skips GPU detection)")
    group.add_argument("--model-parameters", metavar="COUNT",
                       help="size of the base model, e.g. 110M or 13B: narrows the learning rate and, with --gpu-memory, "
                            "says whether its 16-bit weights leave room to train or it loads in 4-bit (default: not narrowed)")
    group.add_argument("--quantize", choices=("4bit", "8bit"),
                       help="the base loaded quantized, as 'run --quantize' does (default: 16-bit on a GPU, or 4-bit where that does not fit)")


def profile_from_args(args: argparse.Namespace, recorded: dict | None = None) -> RunProfile:
    """The run the options describe; the data and model sizes they leave out come from
    ``recorded`` (an exported preset's profile) where given, the hardware from this machine."""
    from .spaces import RunProfile, SpaceError, bf16_assumed, parse_count, parse_memory

    if args.gpu_memory is None and (args.devices is not None or args.bf16 is not None):
        raise SpaceError("--devices and --bf16 describe GPUs: give --gpu-memory too")
    if args.cpu and args.gpu_memory is not None:
        raise SpaceError("--cpu and --gpu-memory contradict each other: give one")
    recorded = recorded or {}
    size = args.dataset_size if args.dataset_size is not None else recorded.get("dataset_size", DEFAULT_DATASET_SIZE)
    parameters = parse_count(args.model_parameters) if args.model_parameters is not None else recorded.get("model_parameters")
    model = {"model_parameters": parameters} if parameters is not None else {}
    model["quantization"] = args.quantize
    if args.gpu_memory is not None:
        memory = parse_memory(args.gpu_memory)
        bf16 = bf16_assumed(memory) if args.bf16 is None else args.bf16
        return RunProfile(size, "cuda", 1 if args.devices is None else args.devices, memory, bf16, **model)
    if args.cpu:
        return RunProfile(size, **model)
    from .objectives import detect_hardware

    return RunProfile(size, **detect_hardware(), **model)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="the scenarios with a one-line description (the default)")
    show = actions.add_parser("show", help="a space resolved for a run: every parameter's range, choices or rule",
                              description="Print a space resolved for a run: every parameter's range, choices or rule.",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
examples:
  lora-search spaces show memory-constrained                     this machine, the embedded data
  lora-search spaces show standard --gpu-memory 24GB --dataset-size 50000 --model-parameters 7B
  lora-search spaces show my-space.yaml --cpu                    check a space file you wrote""")
    show.add_argument("space", metavar="NAME|FILE", help="a scenario name or a space YAML file")
    add_profile_options(show)
    suggest = actions.add_parser("suggest", help="pick the scenario for your GPU memory and time budget",
                                 description="Pick the scenario like the guide's Step 1, and say why.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
examples:
  lora-search spaces suggest                            this machine's GPU, no time budget
  lora-search spaces suggest --gpu-memory 4GB --hours 1
  lora-search spaces suggest --cpu --hours 30m""")
    suggest.add_argument("--gpu-memory", metavar="SIZE", help="memory of one GPU, e.g. 8GB; a bare number is GB (default: detected)")
    suggest.add_argument("--hours", metavar="H", help="time you can spend: a number of hours (0.5, 1, 4) or a duration (30m, "
                         "1h30m) (default: none given; standard, or quick-experiment on a CPU)")
    suggest.add_argument("--cpu", action="store_true", help="suggest for a CPU run (skips GPU detection)")


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        return _show(args)
    if args.action == "suggest":
        return _suggest(args)
    return _list()


def _list() -> int:
    from .spaces import load_space, scenario_names

    spaces = [load_space(name) for name in scenario_names()]
    width = max(len(space.name) for space in spaces)
    for space in spaces:
        print(f"{space.name:<{width}}  {space.description}")
    print("\nlora-search spaces show NAME [--gpu-memory 8GB] prints one resolved for a run.")
    return 0


def _show(args: argparse.Namespace) -> int:
    from .spaces import load_space

    space = load_space(args.space)
    profile = profile_from_args(args)
    resolved = space.resolve(profile)
    defaults = space.study_defaults
    timeout = "none" if defaults.timeout_seconds is None else f"{defaults.timeout_seconds / 60:g} min"
    band = f"{space.effective_batch[0]}-{space.effective_batch[1]}" if space.effective_batch else "none"
    print(f"space {space.name}: {space.description}")
    print(f"source: {space.source}")
    print(f"resolved for: {profile.describe()}")
    if args.gpu_memory is not None and args.bf16 is None:
        print(f"bf16 assumed from the memory alone: {'yes' if profile.bf16_supported else 'no'} for {profile.gpu_memory_gb:g} GB "
              f"(yes from 16 GB, as RTX 30/40 and A100); {'--no-bf16' if profile.bf16_supported else '--bf16'} says otherwise")
    base = profile.base_fit()
    if base is not None:
        print(f"base: {base}")
    print(f"baseline preset: {space.baseline_preset}; study defaults: timeout {timeout}, pruner {defaults.pruner or 'the run default'}, "
          f"rungs {defaults.rungs or 1}, trials {defaults.trials or 30}")
    print(f"effective batch band: {band} examples per optimizer step (per-device x accumulation x devices)")
    print()
    print(format_table(("parameter", "range / choices", "note / rule"), resolved.rows()))
    searched = sum(1 for param in resolved.params if param.sampled)
    print(f"\n{searched} parameters searched; the others fixed or derived by rule "
          "(derived values are stored on each trial as user attributes 'derived.<name>').")
    return 0


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, tuple("-" * len(h) for h in header), *rows]:
        cells = [f"{str(cell):<{width}}" for cell, width in zip(row, widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _suggest(args: argparse.Namespace) -> int:
    from .spaces import SpaceError, parse_memory, suggest_scenario

    hours = None if args.hours is None else _hours(args.hours)
    if args.cpu and args.gpu_memory is not None:
        raise SpaceError("--cpu and --gpu-memory contradict each other: give one")
    detected = ""
    if args.gpu_memory is not None:
        memory = parse_memory(args.gpu_memory)
    elif args.cpu:
        memory = None
    else:
        from .objectives import detect_hardware

        hardware = detect_hardware()
        memory = hardware["gpu_memory_gb"]
        detected = " (detected: " + ("no GPU" if memory is None else f"{hardware['devices']} x {memory:g} GB GPU") + ")"
    name, reasons = suggest_scenario(memory, hours)
    print(f"suggested space: {name}{detected}")
    print("why:")
    for reason in reasons:
        print(f"  - {reason}")
    memory_option = f" --gpu-memory {args.gpu_memory}" if args.gpu_memory else (" --cpu" if args.cpu else "")
    print("next:")
    print(f"  lora-search spaces show {name}{memory_option}")
    print(f"  lora-search run --space {name}" + (f" --timeout {hours:g}h" if hours and name != "time-constrained" else ""))
    return 0


def _hours(text: str) -> float:
    """``--hours``: a bare number is hours (unlike --timeout's seconds), else a duration."""
    from .spaces import SpaceError, parse_duration

    try:
        hours = float(text)
    except ValueError:
        try:
            return parse_duration(text) / 3600
        except SpaceError:
            raise SpaceError(f"--hours {text!r} not understood: write a number of hours (0.5, 1, 4) or a duration "
                             "(30m, 1h30m)") from None
    if not (math.isfinite(hours) and hours > 0):
        raise SpaceError(f"--hours must be more than zero and finite, got {hours:g}")
    return hours
