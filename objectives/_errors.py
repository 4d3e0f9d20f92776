"""Errors the user can fix before a search spends any time training."""

from __future__ import annotations

from lora_search.spaces import LoraSearchError


class DataError(LoraSearchError):
    """Training data that cannot be used: missing file or column, empty, one class only."""


class ModelError(LoraSearchError):
    """A model that cannot be loaded: unknown folder, not cached offline, wrong kind for the task."""


class InfeasibleConfigError(LoraSearchError):
    """A configuration that cannot train here (out of memory, non-finite loss, over the memory budget)."""


class OutputError(LoraSearchError):
    """An output folder that cannot take a training: unwritable, finished, or another training's."""
