"""Scenario search spaces, the guide's rules and presets. Never imports torch."""

from ._errors import LoraSearchError, SpaceError
from ._training_config import LoraSettings, TrainingConfig

__all__ = ["LoraSearchError", "LoraSettings", "SpaceError", "TrainingConfig"]
