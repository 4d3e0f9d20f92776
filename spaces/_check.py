"""Reviewing a training config against the guide, and re-applying its rules for a full run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import _rules
from ._profile import RunProfile
from ._training_config import TrainingConfig


@dataclass(frozen=True)
class Finding:
    """One of the guide's common mistakes found in a config."""

    rule: str  # a short name: "batch-too-large", "no-warmup", ...
    message: str  # what is wrong, the rule behind it, and what to change


def _hardware(profile: RunProfile) -> str:
    if profile.accelerator == "cpu":
        return "CPU"
    return f"{profile.gpu_memory_gb:g} GB GPU{'' if profile.bf16_supported else ' without bf16'}"


def check_config(config: TrainingConfig, profile: RunProfile) -> list[Finding]:
    """The guide's common mistakes that ``config`` makes on ``profile``, in the guide's order."""
    findings = []
    cap = _rules.per_device_batch_cap(profile.gpu_memory_gb)
    batch = config.per_device_train_batch_size
    if cap is not None and batch > cap:
        steps = math.ceil(batch * config.gradient_accumulation_steps / cap)
        findings.append(Finding(
            "batch-too-large",
            f"per_device_train_batch_size {batch} is above the {cap} this {_hardware(profile)} holds "
            f"(guide: 4GB 2-4, 8GB 8-16, 16GB+ 16-32; too large runs out of memory): use {cap} with "
            f"gradient_accumulation_steps {steps} to keep the effective batch",
        ))
    low, high = _rules.LEARNING_RATE_SANE
    if config.learning_rate > high:
        findings.append(Finding(
            "learning-rate-too-high",
            f"learning_rate {config.learning_rate:g} is above {high:g}, double the guide's most aggressive 1e-3 "
            "(too high: the model does not converge): stay within 1e-4 to 1e-3",
        ))
    elif config.learning_rate < low:
        findings.append(Finding(
            "learning-rate-too-low",
            f"learning_rate {config.learning_rate:g} is below {low:g}, half the guide's conservative 1e-4 "
            "(LoRA needs about 10x the full fine-tuning rate; too low trains too slowly): stay within 1e-4 to 1e-3",
        ))
    if config.warmup_ratio == 0 and config.lr_scheduler_type != "constant":
        findings.append(Finding(
            "no-warmup",
            f"warmup_ratio 0 with the {config.lr_scheduler_type} schedule (no warmup makes the start unstable; "
            "guide: 0.1 below 1000 steps, 0.06 up to 10000, 0.03 beyond; only a constant schedule goes without)",
        ))
    if config.eval_strategy == "steps":
        epoch_steps = _rules.steps_per_epoch(profile.dataset_size, config.effective_batch_size * profile.devices)
        per_epoch = _rules.evaluations_per_epoch(epoch_steps, config.eval_steps)
        most = _rules.EVALUATIONS_PER_EPOCH[1]
        if per_epoch > most:
            findings.append(Finding(
                "evaluation-too-frequent",
                f"eval_steps {config.eval_steps} evaluates {per_epoch} times per epoch of {epoch_steps} steps "
                f"({profile.dataset_size:,} examples; guide: 5-10 per epoch, more slows training): "
                f"use eval_steps {_rules.eval_steps_for(epoch_steps)}",
            ))
    if config.early_stopping_patience == 0:
        findings.append(Finding(
            "no-early-stopping",
            "early_stopping_patience 0 disables early stopping (training on past the best evaluation wastes "
            "time overfitting): guide: patience 2 / threshold 0.001 for quick runs, 5 / 0.0001 for long ones",
        ))
    right = _rules.precision_for(profile.accelerator, profile.bf16_supported)
    if config.precision != right:
        why = {
            ("cpu", "fp16"): "half precision is for GPUs",
            ("cpu", "bf16"): "half precision is for GPUs",
        }.get((profile.accelerator, config.precision))
        if why is None:
            if config.precision == "bf16":
                why = "this GPU cannot compute in bf16"
            elif config.precision == "fp32":
                why = "full precision doubles activation memory on a GPU"
            else:
                why = "bf16 keeps fp32's range where fp16 can overflow"
        findings.append(Finding(
            "wrong-precision",
            f"precision {config.precision} on this {_hardware(profile)}: {why} "
            f"(guide: fp32 on CPU, bf16 on modern GPUs, fp16 on older ones): use {right}",
        ))
    return findings


def rederive_for_dataset(config: TrainingConfig, profile: RunProfile) -> tuple[TrainingConfig, dict[str, str]]:
    """``config`` with the guide's rules re-applied for a full run on ``profile``.

    A search trial is a brief proxy; what follows from the data size and the hardware
    (epochs band, batch cap, warmup, evaluation cadence, precision, checkpointing) is
    worked out again. The learned choices (learning rate, effective batch, LoRA) stay.
    Returns the new config and, for each field changed, why.
    """
    changes: dict[str, Any] = {}
    reasons: dict[str, str] = {}

    def change(field: str, value: Any, reason: str) -> None:
        if getattr(config, field) != value:
            changes[field] = value
            reasons[field] = reason

    low, high = _rules.epochs_band(profile.dataset_size)
    if not low <= config.num_train_epochs <= high:
        change("num_train_epochs", min(max(config.num_train_epochs, low), high),
               f"guide: {low}-{high} epochs for {profile.dataset_size:,} examples")

    cap = _rules.per_device_batch_cap(profile.gpu_memory_gb)
    batch, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    if cap is not None and batch > cap:
        # keep the effective batch: cap per device, make up the rest by accumulation
        accumulation = math.ceil(batch * accumulation / cap)
        change("gradient_accumulation_steps", accumulation, f"keeps the effective batch with {cap} per device")
        batch = cap
        change("per_device_train_batch_size", batch, f"guide: at most {cap} per device on a {profile.gpu_memory_gb:g} GB GPU")

    epochs = changes.get("num_train_epochs", config.num_train_epochs)
    effective = batch * accumulation * profile.devices
    epoch_steps = _rules.steps_per_epoch(profile.dataset_size, effective)
    total = _rules.total_steps(profile.dataset_size, effective, epochs)
    change("warmup_ratio", _rules.warmup_ratio_for(total, config.lr_scheduler_type),
           f"guide: warmup by total steps ({total:,} steps, {config.lr_scheduler_type} schedule)")
    strategy = _rules.eval_strategy_for(profile.dataset_size)
    change("eval_strategy", strategy, f"guide: '{strategy}' evaluation for {profile.dataset_size:,} examples")
    eval_steps = epoch_steps if strategy == "epoch" else _rules.eval_steps_for(epoch_steps)
    evaluations = _rules.evaluations_per_epoch(epoch_steps, eval_steps)
    change("eval_steps", eval_steps, f"guide: 5-10 evaluations per epoch ({evaluations} of {epoch_steps:,} steps)")
    change("save_steps", eval_steps, "checkpoints follow evaluations so the best one is kept")
    change("logging_steps", _rules.logging_steps_for(eval_steps), "four training-loss logs per evaluation")
    precision = _rules.precision_for(profile.accelerator, profile.bf16_supported)
    change("precision", precision, f"guide: {precision} on this hardware ({_hardware(profile)})")
    checkpointing = _rules.gradient_checkpointing_for(profile.gpu_memory_gb)
    change("gradient_checkpointing", checkpointing,
           "guide: on below 8 GB of GPU memory" if checkpointing else "guide: off from 8 GB and on CPU (saves ~20% time)")
    return config.replace(**changes), reasons
