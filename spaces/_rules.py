"""The guide's rules of thumb as functions, with the behaviour at each threshold decided.

Every function takes plain numbers, so spaces, presets, ``check`` and the full-run
re-derivation share one reading of the guide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


# Logging: the guide wants a log every 1-2 minutes and names 10 (quick feedback), 100
# (standard) and 200 (less noise) steps. Its 200 read against its 1-2 minutes implies a
# step of 0.3-0.6 s (60-120 s / 200 steps); without a measured step time that is the only
# estimate the guide gives, so logs come at most 200 steps apart. A quarter of
# the evaluation interval alone drifts far past that on large data: 1M examples at 16 per
# step are 62,500 steps per epoch, 7,812 between evaluations, 1,953 between logs (10-20
# minutes at those step times). No floor: a short run's few steps all deserve a log.
MOST_STEPS_BETWEEN_LOGS = 200


def logging_steps_for(eval_steps: int) -> int:
    """Four training-loss logs per evaluation interval (the guide's configs log 2-5 times
    per evaluation), at most 200 steps apart."""
    return max(1, min(eval_steps // 4, MOST_STEPS_BETWEEN_LOGS))


def evaluations_in_run(total_steps: int, eval_steps: int, eval_strategy: str, num_train_epochs: float) -> int:
    """Evaluations a run makes: one per epoch (the last, partial one included), or one
    each ``eval_steps`` optimizer steps."""
    if eval_strategy == "epoch":
        return math.ceil(num_train_epochs)
    return total_steps // eval_steps


def patience_that_fires(patience: int, evaluations: int) -> int:
    """``patience`` lowered so early stopping can fire: the first evaluation sets the best,
    so stopping after ``patience`` evaluations without gain needs ``patience + 1`` of them."""
    return min(patience, max(0, evaluations - 1))


def patience_for_full_run(patience: int, evaluations_per_epoch: int, evaluations: int) -> int:
    """A trial's early-stopping ``patience`` (counted in evaluations) made to span the same
    kind of stretch in a full run, where one evaluation is a much smaller share of training.

    A trial evaluates a few times in all (4 by default), so the guide's patience of 2-5
    waits out most of it; a full run evaluates 5-10 times per epoch, where 3 evaluations
    at 8 per epoch are 3/8 of an epoch: a run stops before it has seen its data once more
    (one exported winner stopped at epoch 0.87 of 4 and, run through, was best at epoch 2).
    So patience is at least one epoch's evaluations (8 at 8 per epoch, 1 with per-epoch
    evaluation: every example seen again without gain before stopping), a larger one is
    kept, and either stays below the run's evaluations so it can fire
    (``patience_that_fires``). 0 (early stopping off) stays off.
    """
    if patience == 0:
        return 0
    return patience_that_fires(max(patience, evaluations_per_epoch), evaluations)


def accumulation_for(effective_batch_total: int, examples_per_pass: int) -> int:
    """Forward passes per optimizer step reaching the effective batch (rounded up: never below it).

    ``examples_per_pass`` is the per-device batch times the devices.
    """
    return math.ceil(effective_batch_total / examples_per_pass)


@dataclass(frozen=True)
class StepPlan:
    """The numbers the guide's chain works out from the data size and the batch."""

    gradient_accumulation_steps: int
    effective_batch_size: int  # per-device x accumulation x devices: examples per optimizer step
    steps_per_epoch: int
    total_steps: int
    warmup_ratio: float
    eval_steps: int
    save_steps: int
    logging_steps: int
    evaluations: int  # in the whole run


def plan_steps(
    dataset_size: int, effective_batch_total: int, per_device: int, devices: int, *,
    num_train_epochs: float, lr_scheduler_type: str, eval_strategy: str, eval_steps: int | None = None,
) -> StepPlan:
    """The guide's chain: effective batch -> accumulation -> steps per epoch -> total steps
    -> warmup -> evaluation, checkpoint and logging cadence -> evaluations in the run.

    ``eval_steps`` given (a space that fixes or searches it) is kept, and checkpoints and
    logs follow it; None derives it.
    """
    accumulation = accumulation_for(effective_batch_total, per_device * devices)
    effective = per_device * accumulation * devices
    epoch_steps = steps_per_epoch(dataset_size, effective)
    total = total_steps(dataset_size, effective, num_train_epochs)
    if eval_steps is None:
        # with per-epoch evaluation one "interval" is the epoch itself
        eval_steps = epoch_steps if eval_strategy == "epoch" else eval_steps_for(epoch_steps)
    return StepPlan(accumulation, effective, epoch_steps, total, warmup_ratio_for(total, lr_scheduler_type),
                    eval_steps, eval_steps, logging_steps_for(eval_steps),
                    evaluations_in_run(total, eval_steps, eval_strategy, num_train_epochs))


# Effective batch (examples per optimizer step, all devices): the guide targets 32-128
# "for most tasks"; its advice when memory is short, 2-4 per device with 4-8 accumulation,
# makes 8-32. Which one a scenario follows, and why, its file says (scenarios/*.yaml).
EFFECTIVE_BATCH_TARGET = (32, 128)
EFFECTIVE_BATCH_MEMORY_CONSTRAINED = (8, 32)


def effective_band_note(band: tuple[int, int]) -> str:
    """Which of the guide's effective-batch rules a space's band follows, over which other."""
    target_low, target_high = EFFECTIVE_BATCH_TARGET
    memory_low, memory_high = EFFECTIVE_BATCH_MEMORY_CONSTRAINED
    if target_low <= band[0] and band[1] <= target_high:
        return f"the guide's {target_low}-{target_high} target for most tasks, over the 16 of its example configs"
    if memory_low <= band[0] and band[1] <= memory_high:
        return (f"the guide's {memory_low}-{memory_high} for short memory (2-4 per device x 4-8 accumulation), "
                f"over its {target_low}-{target_high} target")
    return f"the space's own band, outside the guide's {target_low}-{target_high} target"


# Per-device batch by the memory of one GPU. The guide's table: 4GB -> 2-4, 8GB -> 8-16,
# 16GB+ -> 16-32; a card between two rows gets the lower row (8 <= m < 16 is 8-16).
# Below the 4GB row the guide's smallest batch, 2, is the most, with no floor.
_BATCH_BANDS = ((16.0, (16, 32)), (8.0, (8, 16)), (4.0, (2, 4)))
SMALLEST_ROW_GB = _BATCH_BANDS[-1][0]
_UNDER_SMALLEST_ROW = (1, 2)


def per_device_batch_band(gpu_memory_gb: float | None) -> tuple[int, int] | None:
    """The guide's (smallest, largest) per-device batch for this GPU, or None on CPU.

    The largest is a hard limit (a larger batch runs out of memory); the smallest is
    advice (a smaller batch fits, it only leaves the GPU idle).
    """
    if gpu_memory_gb is None:
        return None
    for threshold, band in _BATCH_BANDS:
        if gpu_memory_gb >= threshold:
            return band
    return _UNDER_SMALLEST_ROW


# Gradient checkpointing: on below 8 GB, off above 16 GB. Between 8 and 16 GB the
# guide's own 8 GB and 16 GB configs keep it off, so it is off from 8 GB up. On CPU it
# is off: host memory is rarely the limit there and it would cost ~20% time.
CHECKPOINTING_BELOW_GB = 8.0


def gradient_checkpointing_for(gpu_memory_gb: float | None) -> bool:
    return gpu_memory_gb is not None and gpu_memory_gb < CHECKPOINTING_BELOW_GB


# bf16 for a GPU known only by its memory: the guide's own configs use fp16 at 4 and
# 8 GB and bf16 at 16 and 24 GB (RTX 30/40 and A100 compute in bf16; the 16 GB V100 and
# T4 do not, hence a way to say so: --no-bf16).
BF16_ASSUMED_FROM_GB = 16.0


def bf16_assumed(gpu_memory_gb: float) -> bool:
    return gpu_memory_gb >= BF16_ASSUMED_FROM_GB


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


# Learning rate: the guide runs from 1e-4 (conservative) through 5e-4 (standard) to 1e-3
# (aggressive), and by model size gives 1e-4 to 3e-4 for 13B+ (LLaMA 13B) and 5e-4 to 1e-3
# for BERT-base. "13B" counts as sold: OPT-13B has 12.85B parameters, so 12.5B and up.
# BERT-base (110M) stands for the base-size family: RoBERTa-base and GPT-2 have 124-125M,
# the next size up (BERT-large, GPT-2 medium) 340-355M; 150M separates them. Between the
# two the guide gives no band and nothing is narrowed.
LEARNING_RATE_RANGE = (1e-4, 1e-3)
LARGE_MODEL_PARAMETERS = 12_500_000_000
SMALL_MODEL_PARAMETERS = 150_000_000
_LARGE_MODEL_RATES = (1e-4, 3e-4)
_SMALL_MODEL_RATES = (5e-4, 1e-3)


def learning_rate_band(model_parameters: int | None) -> tuple[float, float] | None:
    """The guide's learning rates for a model of this size; None: no band (unknown or mid-sized)."""
    if model_parameters is None:
        return None
    if model_parameters >= LARGE_MODEL_PARAMETERS:
        return _LARGE_MODEL_RATES
    if model_parameters <= SMALL_MODEL_PARAMETERS:
        return _SMALL_MODEL_RATES
    return None



# The frozen base: its bytes per parameter as loaded. A GPU keeps it in 16 bits, the CPU
# in fp32. bitsandbytes quantizes only the linear layers' weights: nf4 (QLoRA, Dettmers et
# al. 2023) packs two to a byte with an absmax per 64 weights, itself stored in 8 bits by
# double quantization with an fp32 absmax per 256 of those; int8 is one byte plus an fp32
# scale per row (left out: about 4 bytes per thousands of weights). Embeddings, norms and
# heads stay unquantized, and for training peft's ``prepare_model_for_kbit_training``
# upcasts them to fp32.
QUANTIZATIONS = ("4bit", "8bit")
_BYTES_PER_PARAMETER = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "8bit": 1.0, "4bit": 0.5 + 1 / 64 + 4 / (64 * 256)}
_PREPARED_UNQUANTIZED_BYTES = 4.0  # fp32
GB = 1024**3  # the project's GB: a card sold as 8 GB shows 8 GiB (see _units)


def base_weights_gb(parameters: int, storage: str, *, unquantized_parameters: int = 0) -> float:
    """GB the base's weights take in ``storage``: 'fp32', 'bf16', 'fp16' or one of ``QUANTIZATIONS``.

    ``unquantized_parameters``: those a quantized base keeps out of the linear layers
    (embeddings, norms, heads: fp32 once prepared for training). From the parameter count
    alone (0) a quantized base's figure is a lower bound: Llama-2-7B's embeddings and
    head, 4% of its parameters, add 0.85 GB to its 3.2.
    """
    if storage not in QUANTIZATIONS:
        return parameters * _BYTES_PER_PARAMETER[storage] / GB
    quantized = parameters - unquantized_parameters
    return (quantized * _BYTES_PER_PARAMETER[storage] + unquantized_parameters * _PREPARED_UNQUANTIZED_BYTES) / GB


# What a GPU needs beside the base to train at all: the adapter and its optimizer state,
# the activations of the guide's smallest batch (2, checkpointed below 8 GB), the logits
# and CUDA's own context. A fifth of the card: a 7B base in bf16 (12.6 GB) trains on a
# 16 GB card with 3.4 GB to spare, not on a 12 GB one.
TRAINING_MARGIN_SHARE = 0.2


def training_margin_gb(gpu_memory_gb: float) -> float:
    return TRAINING_MARGIN_SHARE * gpu_memory_gb


def base_fits(parameters: int, storage: str, gpu_memory_gb: float) -> bool:
    """Whether a base of ``parameters`` in ``storage`` leaves this GPU its training margin."""
    return base_weights_gb(parameters, storage) + training_margin_gb(gpu_memory_gb) <= gpu_memory_gb


def base_fit_note(parameters: int, storage: str, gpu_memory_gb: float) -> str:
    """e.g. '12.6 GB in bf16 + 3.2 GB to train fit 16 GB' (a quantized figure is a lower bound)."""
    weights = base_weights_gb(parameters, storage)
    fits = "fit" if base_fits(parameters, storage, gpu_memory_gb) else "exceed"
    bound = " and up" if storage in QUANTIZATIONS else ""
    return f"{weights:.1f} GB{bound} in {storage} + {training_margin_gb(gpu_memory_gb):.1f} GB to train {fits} {gpu_memory_gb:g} GB"


def quantization_for(parameters: int | None, gpu_memory_gb: float | None) -> str | None:
    """'4bit' where the base in 16 bits (a GPU's bf16 or fp16) leaves too little to train
    in, None where it fits, on CPU (host memory is rarely the limit) or with the size unknown.

    4-bit, not 8-bit: nf4 takes half of int8's memory and QLoRA matched 16-bit LoRA with it.
    """
    if parameters is None or gpu_memory_gb is None or base_fits(parameters, "bf16", gpu_memory_gb):
        return None
    return "4bit"
