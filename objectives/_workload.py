"""What a search trains on: the model, the data and the proxy trial's size.

A ``Workload`` is plain data so the engine can store it on the study
(``to_dict``/``from_dict``) and every worker process rebuilds the same objective.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from lora_search.spaces import QUANTIZATIONS

from ._errors import DataError

TASKS = ("classification", "causal-lm")
# metric -> direction. Classification metrics are maximised, losses minimised.
METRIC_DIRECTIONS = {"eval_loss": "minimize", "accuracy": "maximize", "f1": "maximize", "perplexity": "minimize"}
CLASSIFICATION_METRICS = ("eval_loss", "accuracy", "f1")
CAUSAL_LM_METRICS = ("eval_loss", "perplexity")


# The command-line option of each Workload field that has one: "--" + the field's name with
# dashes, except these. Errors name the option, which is what a user of the CLI typed.
_OPTIONS = {"evaluations_per_trial": "--evaluations", "quantization": "--quantize", "memory_budget_gb": "--memory-budget",
            "torch_threads": "--threads"}


def option_name(field_name: str) -> str:
    """The ``lora-search run``/``train`` option that sets Workload field ``field_name``."""
    return _OPTIONS.get(field_name, "--" + field_name.replace("_", "-"))


def metric_direction(metric: str) -> str:
    """``"minimize"`` or ``"maximize"``: how the study optimises ``metric``."""
    try:
        return METRIC_DIRECTIONS[metric]
    except KeyError:
        raise DataError(f"unknown metric {metric!r}: choose one of {', '.join(METRIC_DIRECTIONS)}") from None


# The per-example losses of a barely trained model spread by about this share of their
# mean. Calibrated on the embedded reviews: the guide baseline trained on 128 examples
# (seeds 42, 7, 3; 128 evaluation rows) gains 0.012, 0.028 and 0.026 eval_loss over the
# untrained model's 0.69, a seed-to-seed spread of 0.008 = 0.69 x 0.15 / sqrt(128).
LOSS_SPREAD = 0.15


def metric_noise(metric: str, value: float, rows: int) -> float:
    """About one seed's noise in ``metric`` measured as ``value`` on ``rows`` evaluation rows:
    the binomial standard error at its widest (p = 0.5) for accuracy and f1; for the loss,
    value x LOSS_SPREAD / sqrt(rows); for perplexity = exp(loss) the loss's, carried
    through the exponential."""
    if metric in ("accuracy", "f1"):
        return 0.5 / math.sqrt(rows)
    loss = math.log(value) if metric == "perplexity" else value
    noise = loss * LOSS_SPREAD / math.sqrt(rows)
    return value * noise if metric == "perplexity" else noise


@dataclass(frozen=True)
class Workload:
    model: str | None = field(
        default=None, metadata={"help": "Hugging Face model id or local model folder; None = the embedded all-MiniLM-L6-v2."}
    )
    data: str | None = field(
        default=None,
        metadata={"help": "datasets hub name, a local .csv/.json/.jsonl/.parquet file, or a local folder of split files "
                "(train.csv, validation.csv, test.csv); None = the embedded Amazon fine-food reviews."},
    )
    data_config: str | None = field(default=None, metadata={"help": "Configuration name of a hub dataset (e.g. 'sst2' of 'glue')."})
    train_split: str = field(default="train", metadata={"help": "Split to train on (hub datasets)."})
    eval_split: str | None = field(
        default=None,
        metadata={
            "help": "Validation split: every trial's evaluations, and the full run's best checkpoint and early stopping; "
            "None = the hub dataset's 'validation' split when present, otherwise a seeded hold-out of the training split."
        },
    )
    test_split: str | None = field(
        default=None,
        metadata={
            "help": "Test split: the full run's final score only, never seen by the search; None = the source's 'test' "
            "split (embedded: its 1,000 testing_data rows), otherwise a seeded hold-out of the training split."
        },
    )
    holdout_fraction: float = field(
        default=0.2, metadata={"help": "Share of the training split held out for each of validation and test when the source has no such split."}
    )
    task: str | None = field(default=None, metadata={"help": "'classification' or 'causal-lm'; None = classification when the label column exists."})
    text_column: str | None = field(default=None, metadata={"help": "Text column; None = 'text' ('review' for the embedded data)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (classification); None = 'label' ('score' for the embedded data)."})
    prompt_column: str | None = field(default=None, metadata={"help": "Prompt column (causal-lm with response_column): the loss covers the response only."})
    response_column: str | None = field(default=None, metadata={"help": "Response column (causal-lm with prompt_column)."})
    train_sample: int = field(
        default=128,
        metadata={"help": "Training examples one trial trains on (a seeded sample, the same for every trial): rung 0."},
    )
    rungs: int = field(
        default=1,
        metadata={"help": "Training-data fidelities: after the trials (rung 0), the best quarter of each rung (at least 2; the "
                "best one for a top rung above rung 1) and the baseline train again at the next, on 4x the examples and "
                "validation rows (capped at the splits). 1 = one fidelity."},
    )
    eval_sample: int = field(default=128, metadata={"help": "Evaluation examples scored at each of a trial's evaluations (a fixed seeded sample)."})
    max_length: int = field(default=64, metadata={"help": "Tokens per example; longer texts are truncated."})
    evaluations_per_trial: int = field(default=4, metadata={"help": "About how many evaluations (and pruning decisions) one trial makes."})
    metric: str = field(default="eval_loss", metadata={"help": "eval_loss (minimised); accuracy or f1 (classification, maximised); perplexity (causal-lm)."})
    quantization: str | None = field(
        default=None,
        metadata={"help": "'4bit' (nf4, QLoRA) or '8bit': the frozen base loaded quantized by bitsandbytes; None = unquantized."},
    )
    memory_budget_gb: float | None = field(
        default=None, metadata={"help": "Configs estimated to need more memory than this are infeasible without training."}
    )
    seed: int = field(default=42, metadata={"help": "Seeds the samples, the adapter's initialisation and the data order."})
    torch_threads: int | None = field(default=None, metadata={"help": "torch CPU threads for this process; None = torch's default."})

    def __post_init__(self) -> None:
        for name in ("train_sample", "rungs", "eval_sample", "max_length", "evaluations_per_trial"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise DataError(f"{option_name(name)}: must be a positive integer, got {value!r}")
        if self.task is not None and self.task not in TASKS:
            raise DataError(f"--task: must be one of {', '.join(TASKS)}, got {self.task!r}")
        metric_direction(self.metric)
        if self.task == "classification" and self.metric not in CLASSIFICATION_METRICS:
            raise DataError(f"metric {self.metric!r} does not apply to classification: use one of {', '.join(CLASSIFICATION_METRICS)}")
        if self.task == "causal-lm" and self.metric not in CAUSAL_LM_METRICS:
            raise DataError(f"metric {self.metric!r} does not apply to causal-lm: use one of {', '.join(CAUSAL_LM_METRICS)}")
        if not (isinstance(self.holdout_fraction, (int, float)) and 0 < self.holdout_fraction < 0.5):
            raise DataError(f"workload holdout_fraction: must be in (0, 0.5) (validation and test may both be held out), got {self.holdout_fraction!r}")
        named = [split for split in (self.train_split, self.eval_split, self.test_split) if split is not None]
        if len(set(named)) < len(named):
            raise DataError(f"--train-split, --eval-split and --test-split must name different splits, got {', '.join(map(repr, named))}")
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise DataError(f"--quantize: must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}")
        if self.memory_budget_gb is not None and not (isinstance(self.memory_budget_gb, (int, float)) and self.memory_budget_gb > 0):
            raise DataError(f"--memory-budget: must be a positive number of GB, got {self.memory_budget_gb!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:  # numpy's and Optuna's samplers take no other seed
            raise DataError(f"--seed: must be an integer from 0 to 4294967295 (2**32 - 1), got {self.seed!r}")
        if self.torch_threads is not None and (not _is_int(self.torch_threads) or self.torch_threads < 1):
            raise DataError(f"--threads: must be a positive integer, got {self.torch_threads!r}")
        if (self.prompt_column is None) != (self.response_column is None):
            raise DataError("give --prompt-column and --response-column together (or neither, to train on --text-column)")
        if self.prompt_column is not None and self.task == "classification":
            raise DataError("--prompt-column and --response-column are for --task causal-lm, not classification")

    @property
    def direction(self) -> str:
        return metric_direction(self.metric)

    def replace(self, **changes: Any) -> Workload:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        """Build from plain data (as stored on a study); unknown keys raise ``DataError``."""
        if not isinstance(data, dict):
            raise DataError(f"workload: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"workload: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
