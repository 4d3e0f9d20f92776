"""The training objective: one Optuna trial is one brief LoRA fine-tuning run.

Heavy libraries (torch, transformers, peft, datasets) are imported when an objective
is built or a trial runs, not when this package is imported. Besides the objective,
the pieces a trial is made of (data, model, adapter, Trainer arguments, collator,
metrics) are public so benchmarks can run the same work outside a trial. ``Tracking``
reports trials and trainings to experiment trackers (MLflow, TensorBoard, W&B).
"""

from ._data import prepare_data
from ._errors import DataError, InfeasibleConfigError, ModelError, OutputError
from ._hardware import detect_hardware, distributed_launch, training_profile
from ._model import fit_base_to_gpu, fresh_adapter, model_location, quiet_libraries
from ._objective import FINITE_LOSS_CONSTRAINT, MEMORY_CONSTRAINT, STOP_REASONS, LoraObjective
from ._schedule import RUNG_FACTOR, ProxySchedule, rung_sizes
from ._tracking import TRACKERS, TrackedRun, Tracking, missing_packages
from ._train import claim_output_folder, replay, train_with_preset
from ._trainer import classification_metrics, collator_for, training_arguments
from ._workload import Workload, metric_direction, option_name

__all__ = [
    "FINITE_LOSS_CONSTRAINT",
    "MEMORY_CONSTRAINT",
    "RUNG_FACTOR",
    "STOP_REASONS",
    "TRACKERS",
    "DataError",
    "InfeasibleConfigError",
    "LoraObjective",
    "ModelError",
    "OutputError",
    "ProxySchedule",
    "TrackedRun",
    "Tracking",
    "Workload",
    "claim_output_folder",
    "classification_metrics",
    "collator_for",
    "detect_hardware",
    "distributed_launch",
    "fit_base_to_gpu",
    "fresh_adapter",
    "metric_direction",
    "missing_packages",
    "model_location",
    "option_name",
    "prepare_data",
    "quiet_libraries",
    "replay",
    "rung_sizes",
    "train_with_preset",
    "training_arguments",
    "training_profile",
]
