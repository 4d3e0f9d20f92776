"""The guide's rules of thumb as functions, with the behaviour at each threshold decided.

Every function takes plain numbers, so spaces, presets, ``check`` and the full-run
re-derivation share one reading of the guide.
"""

from __future__ import annotations

import math

# Dataset-size classes shared by the epochs, weight-decay and evaluation-strategy rules.
# The guide says "< 1K" is small and "> 100K" is large, so exactly 1,000 and exactly
# 100,000 are both medium.
SMALL_DATASET = 1_000
LARGE_DATASET = 100_000


def dataset_class(dataset_size: int) -> str:
    if dataset_size < SMALL_DATASET:
        return "small"
    if dataset_size > LARGE_DATASET:
        return "large"
    return "medium"


# Epochs: more data needs fewer passes.
EPOCH_BANDS = {"small": (5, 10), "medium": (3, 5), "large": (1, 3)}

# Weight decay: small data overfits, so it gets the stronger band. The guide gives no
# band for medium data; both of its bands are plausible there, so medium spans both.
WEIGHT_DECAY_BANDS = {"small": (0.01, 0.1), "medium": (0.001, 0.1), "large": (0.001, 0.01)}


def epochs_band(dataset_size: int) -> tuple[int, int]:
    return EPOCH_BANDS[dataset_class(dataset_size)]


def weight_decay_band(dataset_size: int) -> tuple[float, float]:
    return WEIGHT_DECAY_BANDS[dataset_class(dataset_size)]


def eval_strategy_for(dataset_size: int) -> str:
    """'epoch' for small data (an epoch is short), 'steps' otherwise."""
    return "epoch" if dataset_class(dataset_size) == "small" else "steps"


# Warmup by total optimizer steps: "< 1000" short, "1000-10000" medium (both ends
# included), "> 10000" long. A constant schedule has no warmup in the guide.
SHORT_TRAINING = 1_000
LONG_TRAINING = 10_000


def warmup_ratio_for(total_steps: int, lr_scheduler_type: str) -> float:
    if lr_scheduler_type == "constant":
        return 0.0
    if total_steps < SHORT_TRAINING:
        return 0.1
    if total_steps > LONG_TRAINING:
        return 0.03
    return 0.06


def steps_per_epoch(dataset_size: int, effective_batch_total: int) -> int:
    """Optimizer steps per epoch: examples / (per-device x accumulation x devices), rounded up."""
    return max(1, math.ceil(dataset_size / effective_batch_total))


def total_steps(dataset_size: int, effective_batch_total: int, num_train_epochs: float) -> int:
    return max(1, math.ceil(steps_per_epoch(dataset_size, effective_batch_total) * num_train_epochs))


# Evaluations per epoch the guide calls good; the cadence aims at the middle.
EVALUATIONS_PER_EPOCH = (5, 10)
_TARGET_EVALUATIONS = 8


def eval_steps_for(epoch_steps: int) -> int:
    """Steps between evaluations giving 5-10 evaluations per epoch, closest to 8.

    With fewer than 5 steps in an epoch no cadence reaches 5, so every step is evaluated.
    Ties go to the larger interval: evaluating costs time.
    """
    low, high = EVALUATIONS_PER_EPOCH
    candidates = {1}
    for count in range(low, high + 1):
        interval = max(1, epoch_steps // count)
        candidates.update((interval, interval + 1))
    fitting = [s for s in candidates if low <= epoch_steps // s <= high]
    if not fitting:
        return 1
    return min(fitting, key=lambda s: (abs(epoch_steps // s - _TARGET_EVALUATIONS), -s))


def evaluations_per_epoch(epoch_steps: int, eval_steps: int) -> int:
    return epoch_steps // eval_steps


def logging_steps_for(eval_steps: int) -> int:
    """Four training-loss logs per evaluation interval (the guide's configs log 2-5 times per eval)."""
    return max(1, eval_steps // 4)


# Per-device batch cap by the memory of one GPU. The guide's table: 4GB -> 2-4,
# 8GB -> 8-16, 16GB+ -> 16-32; a card between two rows gets the lower row (8 <= m < 16
# caps at 16), and below the 4GB row the guide's smallest batch, 2, is the cap.
_BATCH_CAPS = ((16.0, 32), (8.0, 16), (4.0, 4))
_SMALLEST_BATCH = 2


def per_device_batch_cap(gpu_memory_gb: float | None) -> int | None:
    """The largest per-device batch the guide allows, or None on CPU (no GPU memory limit)."""
    if gpu_memory_gb is None:
        return None
    for threshold, cap in _BATCH_CAPS:
        if gpu_memory_gb >= threshold:
            return cap
    return _SMALLEST_BATCH


# Gradient checkpointing: on below 8 GB, off above 16 GB. Between 8 and 16 GB the
# guide's own 8 GB and 16 GB configs keep it off, so it is off from 8 GB up. On CPU it
# is off: host memory is rarely the limit there and it would cost ~20% time.
CHECKPOINTING_BELOW_GB = 8.0


def gradient_checkpointing_for(gpu_memory_gb: float | None) -> bool:
    return gpu_memory_gb is not None and gpu_memory_gb < CHECKPOINTING_BELOW_GB


def precision_for(accelerator: str, bf16_supported: bool) -> str:
    """fp32 on CPU, bf16 where the GPU supports it, fp16 on older GPUs."""
    if accelerator == "cpu":
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def precision_supported(precision: str, accelerator: str, bf16_supported: bool) -> bool:
    if precision == "fp32":
        return True
    if accelerator == "cpu":
        return False
    return precision == "fp16" or bf16_supported


# Learning rates the guide would ever pick for LoRA run from 1e-4 (conservative) to
# 1e-3 (aggressive). Half the lowest and double the highest bound what counts as sane:
# below, training crawls; above, it diverges.
LEARNING_RATE_SANE = (5e-5, 2e-3)
