"""Scenario search spaces, the guide's rules and presets. Never imports torch.

Optuna is imported only where a trial is replayed (``baseline``, ``params_for``), so
importing this package stays cheap.
"""

from ._check import Finding, check_config, rederive_for_dataset
from ._errors import LoraSearchError, SpaceError, first_line
from ._formats import trainer_values
from ._presets import get_preset, load_config_file, preset_names, read_preset_file
from ._profile import RunProfile
from ._resolve import ResolvedSpace
from ._rules import QUANTIZATIONS, base_weights_gb, bf16_assumed, patience_that_fires, quantization_for
from ._space import PRUNERS, SearchSpace, StudyDefaults, load_space, scenario_names
from ._suggest import suggest_scenario
from ._training_config import PEFT_TASK_TYPES, LoraSettings, TrainingConfig
from ._units import parse_count, parse_duration, parse_memory

__all__ = [
    "PEFT_TASK_TYPES",
    "PRUNERS",
    "QUANTIZATIONS",
    "Finding",
    "LoraSearchError",
    "LoraSettings",
    "ResolvedSpace",
    "RunProfile",
    "SearchSpace",
    "SpaceError",
    "StudyDefaults",
    "TrainingConfig",
    "base_weights_gb",
    "bf16_assumed",
    "check_config",
    "first_line",
    "get_preset",
    "load_config_file",
    "load_space",
    "parse_count",
    "parse_duration",
    "parse_memory",
    "patience_that_fires",
    "preset_names",
    "quantization_for",
    "read_preset_file",
    "rederive_for_dataset",
    "scenario_names",
    "suggest_scenario",
    "trainer_values",
]
