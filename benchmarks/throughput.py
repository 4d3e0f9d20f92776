"""Throughput ceiling: training examples per second inside a trial vs a bare PyTorch loop.

Both train the same LoRA adapter (the quick-experiment guide preset: batch 16 with the
accumulation its scenario's rules give, r 8 on the attention projections) with the same
optimizer steps on the same base model, on the same
device in the same precision (the base as lora-search loads it - half precision on a
GPU - under the autocast the trial trains in), on the same tokenized rows, with the
same collator (dynamic padding up to the same maximum length), AdamW with the same
learning rate and weight decay, linear decay, gradient clipping at 1.0 (the Trainer's
default), in the same process, alternating, several times, after one untimed round of
each that warms up the device (on a GPU: kernels, cuBLAS, the allocator). The bare loop
is what a person would write by hand: DataLoader, forward, backward, clip, optimizer and
scheduler step. Every time is read after the GPU has finished its queued work.

Inside a trial the rate is counted two ways: over the Trainer's training loop minus
its evaluations (a timer on the loop), and as the trial records it (user attr
``examples_per_second``: the whole ``trainer.train()`` call minus evaluations, so it
also pays the Trainer's start-up).

    python benchmarks/throughput.py                     # 3 alternating repeats on the embedded default (~3 min on 2 cores)
    python benchmarks/throughput.py --train-sample 1024 # on a GPU: steps long enough to time
    python benchmarks/throughput.py --quick             # 1 repeat on a tiny model
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
from typing import Any

import _common

# Trial / bare loop. On a GPU a small model's step takes milliseconds, so the Trainer's
# per-step Python work (callbacks, the loss watch) weighs more than on a CPU: issue 13 asks 0.9 there.
TARGET_RATIO = {"cpu": 0.95, "cuda": 0.9}


def bare_loop(objective: Any, config: Any, precision: str) -> dict[str, float]:
    """examples/s of a hand-written training loop on the objective's base (its device and
    dtype) with a fresh adapter, under the autocast (and, for fp16, the gradient scaler)
    of ``precision``, the precision the trial trains in."""
    import torch
    from torch.utils.data import DataLoader

    from lora_search.objectives import collator_for, fresh_adapter

    device = objective.device
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    with fresh_adapter(objective.base_model, config, objective.task, objective.workload.seed) as model:
        model.train()
        loader = DataLoader(objective.train_rows, batch_size=config.per_device_train_batch_size, shuffle=True,
                            collate_fn=collator_for(objective.task, objective.tokenizer), pin_memory=device == "cuda")
        accumulation = config.gradient_accumulation_steps
        steps = math.ceil(len(loader) / accumulation) * int(config.num_train_epochs)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
        examples = 0
        started = _common.clock()
        for _ in range(int(config.num_train_epochs)):
            for index, batch in enumerate(loader, 1):
                with torch.autocast(device, dtype=half) if half is not None else contextlib.nullcontext():
                    loss = model(**batch.to(device)).loss / accumulation
                scaler.scale(loss).backward()
                examples += batch["input_ids"].shape[0]
                if index % accumulation and index < len(loader):
                    continue  # like the Trainer, an epoch's last batches step even when fewer than the accumulation
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad()
        seconds = _common.clock() - started
    return {"examples": examples, "optimizer_steps": scheduler.last_epoch, "seconds": seconds, "examples_per_s": examples / seconds}


def trial_run(objective: Any, config: Any, timer: _common.LoopTimer) -> dict[str, float]:
    import optuna

    study = optuna.create_study(direction=objective.direction, pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    timer.clear()
    objective(trial, config)
    loop = timer.loops[-1]
    examples = trial.user_attrs["examples_seen"]
    in_loop = loop["end"] - loop["begin"] - loop["eval_s"]
    return {"examples": examples, "seconds": in_loop, "examples_per_s": examples / in_loop,
            "recorded_examples_per_s": trial.user_attrs["examples_per_second"], "precision": trial.user_attrs["proxy.precision"],
            "optimizer_steps": trial.user_attrs["optimizer_steps"]}


def report(rows: list[dict[str, Any]], config: Any, objective: Any, precision: str) -> tuple[dict[str, Any], str]:
    """The medians over the repeats and the markdown under the table's header."""
    median = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    target = TARGET_RATIO[objective.device]
    summary = {"bare_examples_per_s": median("bare_examples_per_s"), "trial_examples_per_s": median("trial_examples_per_s"),
               "recorded_examples_per_s": median("recorded_examples_per_s"),
               "ratio": median("trial_examples_per_s") / median("bare_examples_per_s"),
               "recorded_ratio": median("recorded_examples_per_s") / median("bare_examples_per_s"),
               "target_ratio": target}
    summary["meets_target"] = summary["ratio"] >= target
    body = (
        f"The quick-experiment guide preset: batch {config.per_device_train_batch_size} x {config.gradient_accumulation_steps}, "
        f"{config.num_train_epochs} epochs over {len(objective.train_rows)} examples, max length {objective.workload.max_length}, "
        f"LoRA r {config.lora.r} ({config.lora.target_modules}); both sides {_common.trains_on(objective)}, training in "
        f"{precision}; {len(rows)} alternating repeats after one untimed round. Training examples per second.\n\n"
        + _common.markdown_table([("repeat", "repeat"), ("bare PyTorch loop", "bare_examples_per_s"),
                                  ("inside a trial (training loop)", "trial_examples_per_s"), ("ratio", "ratio"),
                                  ("as the trial records it", "recorded_examples_per_s"), ("recorded ratio", "recorded_ratio")], rows)
        + f"\n**Median ratio trial / bare loop: {summary['ratio']:.3f}** (target >= {target} on {objective.device}: "
        f"{'meets' if summary['meets_target'] else 'misses'} it); counting the Trainer's start-up inside train() as the "
        f"trial records it: {summary['recorded_ratio']:.3f}.\n"
    )
    return summary, body


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats of each side (default 3; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    parser.add_argument("--train-sample", type=int, default=None, help="training examples (default: the Workload's 128; 32 with --quick)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    threads = args.threads or (1 if args.quick else 2)
    _common.quiet_libraries()

    from lora_search.objectives import LoraObjective
    from lora_search.spaces import RunProfile, load_space

    with _common.scratch_folder() as scratch_name:
        fields = {"torch_threads": threads, "evaluations_per_trial": 2}
        if args.train_sample is not None:
            fields["train_sample"] = args.train_sample
        work = _common.workload(args.quick, _common.Path(scratch_name), **fields)
        run = _common.Run("throughput", args.quick, {"repeats": repeats, "workload": work.to_dict(), "preset": "quick-experiment"})
        objective = LoraObjective(work)
        config = load_space("quick-experiment").resolve(RunProfile(dataset_size=objective.dataset_size)).baseline()
        timer = _common.LoopTimer().install()
        rows = []
        for repeat in range(repeats + 1):  # round 0 warms up, untimed; its trial says the precision the trial trains in
            inside = trial_run(objective, config, timer)
            bare = bare_loop(objective, config, inside["precision"])
            if repeat:
                rows.append({"repeat": repeat, "bare_examples_per_s": bare["examples_per_s"],
                             "trial_examples_per_s": inside["examples_per_s"],
                             "recorded_examples_per_s": inside["recorded_examples_per_s"],
                             "ratio": inside["examples_per_s"] / bare["examples_per_s"],
                             "recorded_ratio": inside["recorded_examples_per_s"] / bare["examples_per_s"],
                             "examples": inside["examples"], "bare_examples": bare["examples"],
                             "optimizer_steps": inside["optimizer_steps"], "bare_optimizer_steps": bare["optimizer_steps"]})
        timer.uninstall()

    precision = inside["precision"]
    run.parameters.update(device=objective.device, base_precision=objective.base_precision, training_precision=precision)
    summary, body = report(rows, config, objective, precision)
    _common.write(run.record(rows, summary), body, _common.results_folder(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
