"""The training configuration a search samples and a preset stores.

A ``TrainingConfig`` is plain data: every field a person sets when fine-tuning with
LoRA, validated on construction, convertible to the keyword arguments of
transformers' ``TrainingArguments`` and peft's ``LoraConfig``. Nothing here imports
torch, transformers or peft.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ._errors import SpaceError

PRECISIONS = ("fp32", "fp16", "bf16")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
EVAL_STRATEGIES = ("steps", "epoch")
TARGET_MODULE_PRESETS = ("attention", "all-linear")
# peft's task type for each task lora-search trains
PEFT_TASK_TYPES = {"classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM"}


def _check(condition: bool, name: str, problem: str) -> None:
    if not condition:
        raise SpaceError(f"{name}: {problem}")


@dataclass(frozen=True)
class LoraSettings:
    r: int = field(default=8, metadata={"help": "LoRA rank: the width of the low-rank update."})
    lora_alpha: int = field(
        default=16, metadata={"help": "Scaling numerator; the update is scaled by alpha/r (alpha/sqrt(r) with rsLoRA)."}
    )
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input, 0.0-0.1 is usual."})
    target_modules: str = field(
        default="attention",
        metadata={
            "help": "'attention': peft's default attention projections for the architecture "
            "(cheap); 'all-linear': every linear layer but the output head (stronger)."
        },
    )
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling alpha/sqrt(r), for large r."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA): slower, sometimes better."})

    def __post_init__(self) -> None:
        _check(isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 1, "lora.r", f"must be a positive integer, got {self.r!r}")
        _check(_is_number(self.lora_alpha) and self.lora_alpha > 0, "lora.lora_alpha", f"must be a positive finite number, got {self.lora_alpha!r}")
        _check(_is_number(self.lora_dropout) and 0.0 <= self.lora_dropout < 1.0, "lora.lora_dropout", f"must be in [0, 1), got {self.lora_dropout!r}")
        _check(self.target_modules in TARGET_MODULE_PRESETS, "lora.target_modules", f"must be one of {', '.join(TARGET_MODULE_PRESETS)}, got {self.target_modules!r}")
        _check(isinstance(self.use_rslora, bool), "lora.use_rslora", f"must be true or false, got {self.use_rslora!r}")
        _check(isinstance(self.use_dora, bool), "lora.use_dora", f"must be true or false, got {self.use_dora!r}")

    def to_lora_config_kwargs(self, task_type: str) -> dict[str, Any]:
        """Keyword arguments for ``peft.LoraConfig``.

        ``task_type`` is peft's name: ``"SEQ_CLS"`` or ``"CAUSAL_LM"``. For the
        'attention' preset ``target_modules`` is left to peft, which picks the attention
        projections of the model's architecture (query/value for BERT, c_attn for GPT-2,
        q_proj/v_proj for Llama).
        """
        return {
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": "all-linear" if self.target_modules == "all-linear" else None,
            "use_rslora": self.use_rslora,
            "use_dora": self.use_dora,
            "bias": "none",
            "task_type": task_type,
        }


@dataclass(frozen=True)
class TrainingConfig:
    num_train_epochs: float = field(default=3, metadata={"help": "Passes over the training data; more data needs fewer."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Examples per forward pass on each device; reduce first on OOM."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Forward passes summed into one optimizer step."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate; LoRA wants roughly 10x full fine-tuning."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled weight decay; higher on small data."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of optimizer steps spent ramping the learning rate up."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Decay after warmup: linear, cosine or constant."})
    precision: str = field(default="fp32", metadata={"help": "fp32, fp16 (older GPUs) or bf16 (Ampere and newer); fp32 on CPU."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations: less memory, about 20% slower."})
    eval_strategy: str = field(default="steps", metadata={"help": "Evaluate every eval_steps ('steps') or once per epoch ('epoch')."})
    eval_steps: int = field(default=500, metadata={"help": "Optimizer steps between evaluations (strategy 'steps')."})
    save_steps: int = field(default=500, metadata={"help": "Optimizer steps between checkpoints; kept equal to eval_steps."})
    logging_steps: int = field(default=100, metadata={"help": "Optimizer steps between training-loss logs."})
    early_stopping_patience: int = field(default=0, metadata={"help": "Evaluations without improvement before stopping; 0 disables."})
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Smallest change in the metric that counts as improvement."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Background processes loading batches."})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "The adapter's settings."})

    def __post_init__(self) -> None:
        _check(_is_number(self.num_train_epochs) and self.num_train_epochs > 0, "num_train_epochs", f"must be a positive finite number, got {self.num_train_epochs!r}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "eval_steps", "save_steps", "logging_steps"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, f"must be a positive integer, got {value!r}")
        _check(_is_number(self.learning_rate) and 0 < self.learning_rate < 1, "learning_rate", f"must be a number in (0, 1), got {self.learning_rate!r}")
        _check(_is_number(self.weight_decay) and 0 <= self.weight_decay < 1, "weight_decay", f"must be a number in [0, 1), got {self.weight_decay!r}")
        _check(_is_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be a ratio in [0, 1), got {self.warmup_ratio!r}")
        _check(self.lr_scheduler_type in SCHEDULERS, "lr_scheduler_type", f"must be one of {', '.join(SCHEDULERS)}, got {self.lr_scheduler_type!r}")
        _check(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check(isinstance(self.gradient_checkpointing, bool), "gradient_checkpointing", f"must be true or false, got {self.gradient_checkpointing!r}")
        _check(self.eval_strategy in EVAL_STRATEGIES, "eval_strategy", f"must be one of {', '.join(EVAL_STRATEGIES)}, got {self.eval_strategy!r}")
        _check(_is_int(self.early_stopping_patience) and self.early_stopping_patience >= 0, "early_stopping_patience", f"must be a non-negative integer, got {self.early_stopping_patience!r}")
        _check(_is_number(self.early_stopping_threshold) and self.early_stopping_threshold >= 0, "early_stopping_threshold", f"must be a non-negative finite number, got {self.early_stopping_threshold!r}")
        _check(_is_int(self.dataloader_num_workers) and self.dataloader_num_workers >= 0, "dataloader_num_workers", f"must be a non-negative integer, got {self.dataloader_num_workers!r}")
        _check(isinstance(self.lora, LoraSettings), "lora", "must be a LoraSettings")

    @property
    def effective_batch_size(self) -> int:
        """Examples per optimizer step on one device (multiply by the device count)."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with some fields changed (``lora=`` takes a dict of LoRA changes too)."""
        lora = changes.pop("lora", None)
        if isinstance(lora, dict):
            changes["lora"] = dataclasses.replace(self.lora, **lora)
        elif lora is not None:
            changes["lora"] = lora
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """The settings under dotted keys, the LoRA ones as ``lora.r``: how changes are listed."""
        data = self.to_dict()
        lora = data.pop("lora")
        return {**data, **{f"lora.{key}": value for key, value in lora.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainingConfig:
        """Build from plain data (a preset file), defaults filling what is missing.

        Unknown keys and wrong types raise ``SpaceError`` naming ``source`` and the key.
        """
        if not isinstance(data, dict):
            raise SpaceError(f"{source}: expected a mapping of training settings, got {type(data).__name__}")
        training_fields = {f.name for f in dataclasses.fields(cls)}
        lora_fields = {f.name for f in dataclasses.fields(LoraSettings)}
        unknown = sorted(set(data) - training_fields)
        if unknown:
            raise SpaceError(f"{source}: unknown training setting {unknown[0]!r} (known: {', '.join(sorted(training_fields))})")
        values = dict(data)
        lora = values.pop("lora", None) or {}
        if not isinstance(lora, dict):
            raise SpaceError(f"{source}: 'lora' must be a mapping of LoRA settings")
        unknown = sorted(set(lora) - lora_fields)
        if unknown:
            raise SpaceError(f"{source}: unknown LoRA setting {unknown[0]!r} (known: {', '.join(sorted(lora_fields))})")
        try:
            return cls(**values, lora=LoraSettings(**lora))
        except SpaceError as error:
            raise SpaceError(f"{source}: {error}") from None

    def to_training_arguments_kwargs(self, metric_for_best_model: str = "eval_loss", greater_is_better: bool = False) -> dict[str, Any]:
        """Keyword arguments for transformers 5 ``TrainingArguments`` (add ``output_dir``).

        Checkpoints follow evaluations so the best one can be restored at the end;
        that is also what early stopping needs.
        """
        return {
            "num_train_epochs": self.num_train_epochs,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            # transformers 5: a float in [0, 1) is a ratio of the total steps.
            "warmup_steps": self.warmup_ratio,
            "lr_scheduler_type": self.lr_scheduler_type,
            "fp16": self.precision == "fp16",
            "bf16": self.precision == "bf16",
            "gradient_checkpointing": self.gradient_checkpointing,
            "eval_strategy": self.eval_strategy,
            "eval_steps": self.eval_steps,
            "save_strategy": self.eval_strategy,
            "save_steps": self.save_steps,
            "logging_steps": self.logging_steps,
            "dataloader_num_workers": self.dataloader_num_workers,
            "load_best_model_at_end": True,
            "metric_for_best_model": metric_for_best_model,
            "greater_is_better": greater_is_better,
        }

    def early_stopping_kwargs(self) -> dict[str, Any] | None:
        """Keyword arguments for ``transformers.EarlyStoppingCallback``; None when disabled."""
        if self.early_stopping_patience == 0:
            return None
        return {
            "early_stopping_patience": self.early_stopping_patience,
            "early_stopping_threshold": self.early_stopping_threshold,
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float: inf and nan pass comparisons like 'inf > 0' but train nothing."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (isinstance(value, int) or math.isfinite(value))
