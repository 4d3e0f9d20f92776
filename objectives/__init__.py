"""The training objective: one Optuna trial is one brief LoRA fine-tuning run.

Heavy libraries (torch, transformers, peft, datasets) are imported when an objective
is built or a trial runs, not when this package is imported.
"""

from ._errors import DataError, InfeasibleConfigError, ModelError
from ._hardware import detect_hardware
from ._objective import FINITE_LOSS_CONSTRAINT, MEMORY_CONSTRAINT, STOP_REASONS, LoraObjective
from ._schedule import ProxySchedule
from ._train import replay, train_with_preset
from ._workload import Workload, metric_direction

__all__ = [
    "FINITE_LOSS_CONSTRAINT",
    "MEMORY_CONSTRAINT",
    "STOP_REASONS",
    "DataError",
    "InfeasibleConfigError",
    "LoraObjective",
    "ModelError",
    "ProxySchedule",
    "Workload",
    "detect_hardware",
    "metric_direction",
    "replay",
    "train_with_preset",
]
