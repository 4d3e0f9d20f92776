"""The parameters a space may set: their types, the forms they accept and their rules.

A space file writes each parameter in one of four forms:

- a plain value (``gradient_accumulation_steps: 1``): fixed;
- ``{low: .., high: .., log: true, step: ..}``: a range searched by Optuna;
- ``{choices: [..]}``: a categorical choice searched by Optuna;
- ``{rule: NAME}``: worked out by one of the guide's rules. A "narrowing" rule may
  also be given together with a range or choices: the space's values are then
  intersected with what the rule allows for the run profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._training_config import EVAL_STRATEGIES, PRECISIONS, SCHEDULERS, TARGET_MODULE_PRESETS


@dataclass(frozen=True)
class Rule:
    name: str
    narrows: bool  # True: intersects the space's range/choices; False: the value is derived after sampling
    help: str


@dataclass(frozen=True)
class ParamInfo:
    key: str  # the trial parameter name: "learning_rate", "lora.r"
    type: type  # int, float, bool or str
    options: tuple[str, ...] | None = None  # the allowed strings of a str parameter
    rule: Rule | None = None
    searchable: bool = True  # False: only a fixed value or the rule
    ranged: bool = True  # False: choices only (no low/high)

    @property
    def section(self) -> str:
        return "lora" if self.key.startswith("lora.") else "training"

    @property
    def field(self) -> str:
        return self.key.split(".", 1)[1] if self.section == "lora" else self.key


_DATASET_EPOCHS = Rule("dataset-size", True, "epochs by dataset size: <1K 5-10, 1K-100K 3-5, >100K 1-3")
_DATASET_DECAY = Rule("dataset-size", True, "by dataset size: <1K 0.01-0.1, 1K-100K 0.001-0.1, >100K 0.001-0.01")
_MEMORY_BATCH = Rule("gpu-memory", True, "by GPU memory: 4GB 2-4, 8GB 8-16, 16GB+ 16-32, under 4GB at most 2")
_MODEL_RATE = Rule("model-size", True, "by model size: 13B+ 1e-4 to 3e-4, base-sized (up to 150M) 5e-4 to 1e-3, else as given")

# In sampling order: what later rules need (batch, epochs, scheduler) comes first.
PARAMETERS: tuple[ParamInfo, ...] = (
    ParamInfo("num_train_epochs", int, rule=_DATASET_EPOCHS),
    ParamInfo("per_device_train_batch_size", int, rule=_MEMORY_BATCH, ranged=False),
    ParamInfo(
        "gradient_accumulation_steps", int, searchable=False,
        rule=Rule("effective-batch", False, "effective batch / (per-device batch x devices)"),
    ),
    ParamInfo("learning_rate", float, rule=_MODEL_RATE),
    ParamInfo("weight_decay", float, rule=_DATASET_DECAY),
    ParamInfo("lr_scheduler_type", str, options=SCHEDULERS),
    ParamInfo("warmup_ratio", float, rule=Rule("total-steps", False, "by total steps: <1000 0.1, 1000-10000 0.06, >10000 0.03; constant 0.0")),
    ParamInfo("precision", str, options=PRECISIONS, rule=Rule("hardware", False, "fp32 on CPU, bf16 where supported, else fp16")),
    ParamInfo("gradient_checkpointing", bool, rule=Rule("gpu-memory", False, "on below 8GB of GPU memory, off from 8GB and on CPU")),
    ParamInfo("eval_strategy", str, options=EVAL_STRATEGIES, rule=Rule("dataset-size", False, "'epoch' below 1K examples, else 'steps'")),
    ParamInfo("eval_steps", int, rule=Rule("evaluations-per-epoch", False, "5-10 evaluations per epoch (aims at 8)")),
    ParamInfo("save_steps", int, rule=Rule("eval-steps", False, "equal to eval_steps (the best checkpoint is kept)")),
    ParamInfo("logging_steps", int, rule=Rule("eval-steps", False, "a quarter of eval_steps (4 logs per evaluation), at most 200 apart")),
    ParamInfo("early_stopping_patience", int),
    ParamInfo("early_stopping_threshold", float),
    ParamInfo("dataloader_num_workers", int),
    ParamInfo("lora.r", int),
    ParamInfo("lora.alpha_ratio", float),
    ParamInfo("lora.lora_dropout", float),
    ParamInfo("lora.target_modules", str, options=TARGET_MODULE_PRESETS),
    ParamInfo("lora.use_rslora", bool),
    ParamInfo("lora.use_dora", bool),
)

BY_KEY = {info.key: info for info in PARAMETERS}

# The effective batch band lives under ``constraints``; with accumulation derived it is
# also sampled, as this parameter, over the powers of two in the band.
EFFECTIVE_BATCH = "effective_batch_size"


def keys_in(section: str) -> list[str]:
    return [info.field for info in PARAMETERS if info.section == section]
