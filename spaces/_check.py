"""Reviewing a training config against the guide, and re-applying its rules for a full run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _rules
from ._profile import RunProfile
from ._training_config import TrainingConfig
from ._units import format_count


@dataclass(frozen=True)
class Finding:
    """One of the guide's common mistakes found in a config."""

    rule: str  # a short name: "batch-too-large", "no-warmup", ...
    message: str  # what is wrong, the rule behind it, and what to change


def _model(profile: RunProfile) -> str:
    return f"a {format_count(profile.model_parameters)}-parameter model" if profile.model_parameters else "this model"


def _hardware(profile: RunProfile) -> str:
    if profile.accelerator == "cpu":
        return "CPU"
    return f"{profile.gpu_memory_gb:g} GB GPU{'' if profile.bf16_supported else ' without bf16'}"


def check_config(config: TrainingConfig, profile: RunProfile) -> list[Finding]:
    """The guide's common mistakes that ``config`` makes on ``profile``, in the guide's order,
    then a base too large for the GPU (with the model's size known): the guide's configs
    assume a base that fits, QLoRA makes one fit.

    Precision counts only where it cannot run (the guide's mistake 7 is about
    compatibility): half precision on CPU, bf16 on a GPU without it. fp32 on a GPU and
    fp16 on a bf16 GPU both run, so they are left alone here; spaces and ``export`` pick
    the faster precision anyway.
    """
    findings = []
    band = _rules.per_device_batch_band(profile.gpu_memory_gb)
    cap = band and band[1]
    batch = config.per_device_train_batch_size
    if cap is not None and batch > cap:
        steps = _rules.accumulation_for(config.effective_batch_size, cap)
        findings.append(Finding(
            "batch-too-large",
            f"per_device_train_batch_size {batch} is above the {cap} this {_hardware(profile)} holds "
            f"(guide: 4GB 2-4, 8GB 8-16, 16GB+ 16-32; too large runs out of memory): use {cap} with "
            f"gradient_accumulation_steps {steps} to keep the effective batch",
        ))
    # half the guide's lowest rate and double its highest bound what counts as sane:
    # below, training crawls; above, it diverges
    model_band = _rules.learning_rate_band(profile.model_parameters)
    guide_low, guide_high = model_band or _rules.LEARNING_RATE_RANGE
    low, high = guide_low / 2, guide_high * 2
    rates = f"stay within {guide_low:g} to {guide_high:g}" + (f" for {_model(profile)}" if model_band else "")
    if config.learning_rate > high:
        findings.append(Finding(
            "learning-rate-too-high",
            f"learning_rate {config.learning_rate:g} is above {high:g}, double the guide's highest {guide_high:g} "
            f"(too high: the model does not converge): {rates}",
        ))
    elif config.learning_rate < low:
        findings.append(Finding(
            "learning-rate-too-low",
            f"learning_rate {config.learning_rate:g} is below {low:g}, half the guide's lowest {guide_low:g} "
            f"(LoRA needs about 10x the full fine-tuning rate; too low trains too slowly): {rates}",
        ))
    if config.warmup_ratio == 0 and config.lr_scheduler_type != "constant":
        findings.append(Finding(
            "no-warmup",
            f"warmup_ratio 0 with the {config.lr_scheduler_type} schedule (no warmup makes the start unstable; "
            "guide: 0.1 below 1000 steps, 0.06 up to 10000, 0.03 beyond; only a constant schedule goes without)",
        ))
    effective = config.effective_batch_size * profile.devices
    epoch_steps = _rules.steps_per_epoch(profile.dataset_size, effective)
    if config.eval_strategy == "steps":
        per_epoch = _rules.evaluations_per_epoch(epoch_steps, config.eval_steps)
        most = _rules.EVALUATIONS_PER_EPOCH[1]
        if per_epoch > most:
            findings.append(Finding(
                "evaluation-too-frequent",
                f"eval_steps {config.eval_steps} evaluates {per_epoch} times per epoch of {epoch_steps} steps "
                f"({profile.dataset_size:,} examples; guide: 5-10 per epoch, more slows training): "
                f"use eval_steps {_rules.eval_steps_for(epoch_steps)}",
            ))
    total = _rules.total_steps(profile.dataset_size, effective, config.num_train_epochs)
    evaluations = _rules.evaluations_in_run(total, config.eval_steps, config.eval_strategy, config.num_train_epochs)
    patience = config.early_stopping_patience
    if patience == 0 and evaluations > 1:
        findings.append(Finding(
            "no-early-stopping",
            "early_stopping_patience 0 disables early stopping (training on past the best evaluation wastes "
            "time overfitting): guide: patience 2 / threshold 0.001 for quick runs, 5 / 0.0001 for long ones",
        ))
    elif 0 < patience and evaluations <= patience:
        counted = (f"{evaluations} per-epoch evaluation(s) in {config.num_train_epochs:g} epochs" if config.eval_strategy == "epoch"
                   else f"{evaluations} evaluation(s) in {total:,} steps at eval_steps {config.eval_steps}")
        fix = (f"lower it to at most {evaluations - 1} or evaluate more often" if evaluations > 1
               else "evaluate more often (fewer eval_steps, or 'steps' evaluation)")
        findings.append(Finding(
            "early-stopping-cannot-fire",
            f"early_stopping_patience {patience} with {counted} ({profile.dataset_size:,} examples): the first evaluation "
            f"sets the best and {patience} more without gain are needed, so early stopping never fires: {fix}",
        ))
    if not _rules.precision_supported(config.precision, profile.accelerator, profile.bf16_supported):
        right = _rules.precision_for(profile.accelerator, profile.bf16_supported)
        why = "half precision is for GPUs" if profile.accelerator == "cpu" else "this GPU cannot compute in bf16"
        findings.append(Finding(
            "wrong-precision",
            f"precision {config.precision} on this {_hardware(profile)}: {why} "
            f"(guide: fp32 on CPU, bf16 on modern GPUs, fp16 on older ones): use {right}",
        ))
    parameters, memory = profile.model_parameters, profile.gpu_memory_gb
    if parameters is not None and memory is not None:
        storage = profile.quantization or _rules.precision_for(profile.accelerator, profile.bf16_supported)
        if not _rules.base_fits(parameters, storage, memory):
            fix = (f"load it in 4-bit (QLoRA, --quantize 4bit: {_rules.base_fit_note(parameters, '4bit', memory)})"
                   if storage != "4bit" and _rules.base_fits(parameters, "4bit", memory) else "use a smaller model or a larger GPU")
            findings.append(Finding(
                "base-too-large",
                f"{_model(profile)} leaves this GPU too little to train ({_rules.base_fit_note(parameters, storage, memory)}): {fix}",
            ))
    return findings


def rederive_for_dataset(config: TrainingConfig, profile: RunProfile) -> tuple[TrainingConfig, dict[str, str]]:
    """``config`` with the guide's rules re-applied for a full run on ``profile``.

    A search trial is a brief proxy; what follows from the data size and the hardware
    (epochs band, batch cap, warmup, evaluation cadence, precision, checkpointing, and
    an early-stopping patience of at least an epoch that can still fire) is worked out
    again. The learned choices (learning rate, effective batch, LoRA) stay. Returns the
    new config and, for each field changed, why.
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

    band = _rules.per_device_batch_band(profile.gpu_memory_gb)
    cap = band and band[1]
    per_device = config.per_device_train_batch_size
    if cap is not None and per_device > cap:
        per_device = cap
        change("per_device_train_batch_size", cap, f"guide: at most {cap} per device on a {profile.gpu_memory_gb:g} GB GPU")
    strategy = _rules.eval_strategy_for(profile.dataset_size)
    # the effective batch is kept: what the per-device cap takes, accumulation makes up
    plan = _rules.plan_steps(
        profile.dataset_size, config.effective_batch_size * profile.devices, per_device, profile.devices,
        num_train_epochs=changes.get("num_train_epochs", config.num_train_epochs),
        lr_scheduler_type=config.lr_scheduler_type, eval_strategy=strategy,
    )
    change("gradient_accumulation_steps", plan.gradient_accumulation_steps, f"keeps the effective batch with {per_device} per device")
    change("warmup_ratio", plan.warmup_ratio,
           f"guide: warmup by total steps ({plan.total_steps:,} steps, {config.lr_scheduler_type} schedule)")
    change("eval_strategy", strategy, f"guide: '{strategy}' evaluation for {profile.dataset_size:,} examples")
    per_epoch = _rules.evaluations_per_epoch(plan.steps_per_epoch, plan.eval_steps)
    change("eval_steps", plan.eval_steps,
           f"one epoch's {plan.steps_per_epoch:,} steps: evaluated at each epoch's end" if strategy == "epoch"
           else f"guide: 5-10 evaluations per epoch ({per_epoch} of {plan.steps_per_epoch:,} steps)")
    change("save_steps", plan.save_steps, "checkpoints follow evaluations so the best one is kept")
    change("logging_steps", plan.logging_steps, "four training-loss logs per evaluation, at most 200 steps apart")
    trial_patience = config.early_stopping_patience
    patience = _rules.patience_for_full_run(trial_patience, per_epoch, plan.evaluations)
    if patience > trial_patience:
        can_fire = f", below the run's {plan.evaluations} so it can fire" if patience < per_epoch else ""
        change("early_stopping_patience", patience,
               f"counted in evaluations: {trial_patience} at {per_epoch} per epoch would stop after "
               f"{trial_patience / per_epoch:.2g} of an epoch without gain; at least one epoch's worth{can_fire}")
    else:
        change("early_stopping_patience", patience, f"lowered so early stopping can fire within the run's {plan.evaluations} evaluation(s)")
    precision = _rules.precision_for(profile.accelerator, profile.bf16_supported)
    change("precision", precision, f"guide: {precision} on this hardware ({_hardware(profile)})")
    checkpointing = _rules.gradient_checkpointing_for(profile.gpu_memory_gb)
    change("gradient_checkpointing", checkpointing,
           "guide: on below 8 GB of GPU memory" if checkpointing else "guide: off from 8 GB and on CPU (saves ~20% time)")
    return config.replace(**changes), reasons
