"""lora-search: constrained Optuna searches over LoRA/PEFT fine-tuning settings.

The package stays light to import (``lora-search --help`` must not load torch):
the Python API below is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_API: dict[str, str] = {
    "LoraSearchError": "lora_search.spaces",
    "TrainingConfig": "lora_search.spaces",
    "LoraSettings": "lora_search.spaces",
    "StorageError": "lora_search._errors",
    "open_storage": "lora_search._storage",
    "storage_label": "lora_search._storage",
    "RunRequest": "lora_search._engine",
    "RunSummary": "lora_search._engine",
    "run_search": "lora_search._engine",
    "load_lora_study": "lora_search._study",
    "stored_space": "lora_search._study",
    "trial_config": "lora_search._study",
    "make_pruner": "lora_search._samplers",
    "trial_outcome": "lora_search._trials",
    "Preset": "lora_search._presets",
    "find_preset": "lora_search._presets",
    "load_preset": "lora_search._presets",
    "train_preset": "lora_search._presets",
    "training_arguments_kwargs": "lora_search._presets",
    "lora_config_kwargs": "lora_search._presets",
    "to_training_arguments": "lora_search._presets",
    "to_lora_config": "lora_search._presets",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'lora_search' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
