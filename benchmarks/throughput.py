"""Throughput ceiling: training examples per second inside a trial vs a bare PyTorch loop.

Both train the same LoRA adapter (the quick-experiment guide preset: batch 16, no
accumulation, r 8 on the attention projections) on the same base model, the same
tokenized rows, the same collator (dynamic padding up to the same maximum length),
AdamW with the same learning rate and weight decay, linear decay, gradient clipping at
1.0 (the Trainer's default), in the same process, alternating, several times. The bare
loop is what a person would write by hand: DataLoader, forward, backward, clip,
optimizer and scheduler step.

Inside a trial the rate is counted two ways: over the Trainer's training loop minus
its evaluations (a timer on the loop), and as the trial records it (user attr
``examples_per_second``: the whole ``trainer.train()`` call minus evaluations, so it
also pays the Trainer's start-up).

    python benchmarks/throughput.py            # 3 alternating repeats on the embedded default (~3 min)
    python benchmarks/throughput.py --quick    # 1 repeat on a tiny model
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import _common

TARGET_RATIO = 0.95


def bare_loop(objective: Any, config: Any) -> dict[str, float]:
    """examples/s of a hand-written training loop on the objective's model with a fresh adapter."""
    import torch
    from torch.utils.data import DataLoader

    from lora_search.objectives import collator_for, fresh_adapter

    with fresh_adapter(objective.base_model, config, objective.task, objective.workload.seed) as model:
        model.train()
        loader = DataLoader(objective.train_rows, batch_size=config.per_device_train_batch_size, shuffle=True,
                            collate_fn=collator_for(objective.task, objective.tokenizer))
        steps = len(loader) * int(config.num_train_epochs)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
        examples = 0
        started = time.perf_counter()
        for _ in range(int(config.num_train_epochs)):
            for batch in loader:
                loss = model(**batch.to(objective.device)).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                examples += batch["input_ids"].shape[0]
        seconds = time.perf_counter() - started
    return {"examples": examples, "seconds": seconds, "examples_per_s": examples / seconds}


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
            "recorded_examples_per_s": trial.user_attrs["examples_per_second"]}


def report(rows: list[dict[str, Any]], config: Any, work: Any, threads: int) -> tuple[dict[str, Any], str]:
    """The medians over the repeats and the markdown under the table's header."""
    median = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    summary = {"bare_examples_per_s": median("bare_examples_per_s"), "trial_examples_per_s": median("trial_examples_per_s"),
               "recorded_examples_per_s": median("recorded_examples_per_s"),
               "ratio": median("trial_examples_per_s") / median("bare_examples_per_s"),
               "recorded_ratio": median("recorded_examples_per_s") / median("bare_examples_per_s"),
               "target_ratio": TARGET_RATIO}
    summary["meets_target"] = summary["ratio"] >= TARGET_RATIO
    body = (
        f"The quick-experiment guide preset: batch {config.per_device_train_batch_size} x {config.gradient_accumulation_steps}, "
        f"{config.num_train_epochs} epochs over {work.train_sample} examples, max length {work.max_length}, LoRA r "
        f"{config.lora.r} ({config.lora.target_modules}), {threads} torch threads; {len(rows)} alternating repeats. "
        f"Training examples per second.\n\n"
        + _common.markdown_table([("repeat", "repeat"), ("bare PyTorch loop", "bare_examples_per_s"),
                                  ("inside a trial (training loop)", "trial_examples_per_s"), ("ratio", "ratio"),
                                  ("as the trial records it", "recorded_examples_per_s"), ("recorded ratio", "recorded_ratio")], rows)
        + f"\n**Median ratio trial / bare loop: {summary['ratio']:.3f}** (target >= {TARGET_RATIO}: "
        f"{'meets' if summary['meets_target'] else 'misses'} it); counting the Trainer's start-up inside train() as the "
        f"trial records it: {summary['recorded_ratio']:.3f}.\n"
    )
    return summary, body


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats of each side (default 3; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    threads = args.threads or (1 if args.quick else 2)
    _common.quiet_libraries()

    from lora_search.objectives import LoraObjective
    from lora_search.spaces import RunProfile, load_space

    with _common.scratch_folder() as scratch_name:
        work = _common.workload(args.quick, _common.Path(scratch_name), torch_threads=threads, evaluations_per_trial=2)
        run = _common.Run("throughput", args.quick, {"repeats": repeats, "workload": work.to_dict(), "preset": "quick-experiment"})
        objective = LoraObjective(work)
        config = load_space("quick-experiment").resolve(RunProfile(dataset_size=objective.dataset_size)).baseline()
        timer = _common.LoopTimer().install()
        rows = []
        for repeat in range(repeats):
            bare = bare_loop(objective, config)
            inside = trial_run(objective, config, timer)
            rows.append({"repeat": repeat + 1, "bare_examples_per_s": bare["examples_per_s"],
                         "trial_examples_per_s": inside["examples_per_s"],
                         "recorded_examples_per_s": inside["recorded_examples_per_s"],
                         "ratio": inside["examples_per_s"] / bare["examples_per_s"],
                         "recorded_ratio": inside["recorded_examples_per_s"] / bare["examples_per_s"],
                         "examples": inside["examples"], "bare_examples": bare["examples"]})
        timer.uninstall()

    summary, body = report(rows, config, work, threads)
    _common.write(run.record(rows, summary), body, _common.results_folder(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
