"""The guide's named configurations, stored as data under ``presets/``, and preset files.

A preset file names only what it changes from ``TrainingConfig``'s defaults:

    description: one line
    training: {num_train_epochs: 3, ...}   # TrainingConfig fields
    lora: {r: 16, ...}                     # LoraSettings fields (optional)

An alias file holds ``alias_of: OTHER`` and nothing else. Files that ``lora-search
export`` writes have the same two sections plus provenance, which is ignored here.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ._errors import SpaceError
from ._training_config import TrainingConfig
from ._units import number_as_text

_PRESET_SECTIONS = ("training", "lora")


def _preset_files() -> dict[str, Any]:
    folder = resources.files(__package__) / "presets"
    return {entry.name[: -len(".yaml")]: entry for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def preset_names() -> list[str]:
    """The built-in preset names: the five scenarios and the guide's quick/standard/intensive."""
    return sorted(_preset_files())


@functools.lru_cache(maxsize=None)
def get_preset(name: str) -> TrainingConfig:
    """The built-in preset ``name`` with the guide's exact numbers (aliases followed)."""
    files = _preset_files()
    seen = [name]
    while True:
        if name not in files:
            known = ", ".join(preset_names())
            raise SpaceError(f"unknown preset {seen[0]!r}: the built-in presets are {known}")
        data = yaml.safe_load(files[name].read_text(encoding="utf-8"))
        target = data.get("alias_of") if isinstance(data, dict) else None
        if target is None:
            return config_from_data(data, source=f"preset {name!r}")
        if target in seen:
            raise SpaceError(f"preset aliases loop: {' -> '.join(seen + [target])}")
        seen.append(target)
        name = target


def alias_target(name: str) -> str | None:
    """The preset an alias points at, or None for a preset with its own numbers."""
    files = _preset_files()
    if name not in files:
        return None
    data = yaml.safe_load(files[name].read_text(encoding="utf-8"))
    return data.get("alias_of") if isinstance(data, dict) else None


def preset_description(name: str) -> str:
    data = yaml.safe_load(_preset_files()[name].read_text(encoding="utf-8"))
    if "alias_of" in data:
        return f"the guide's {name.upper()}_TRAINING_CONFIG: same as preset {data['alias_of']!r}"
    return str(data.get("description", ""))


def config_from_data(data: Any, *, source: str) -> TrainingConfig:
    """A TrainingConfig from a preset mapping (``training:``/``lora:`` sections) or a flat one.

    In the sectioned form other top-level keys (description, provenance, metrics) are
    information for people and are ignored; the flat form is all TrainingConfig fields.
    """
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping of training settings, got {type(data).__name__}")
    if "training" not in data:
        _numbers_read_as_text(data, source)
        return TrainingConfig.from_dict(data, source=source)
    training = data["training"] or {}
    if not isinstance(training, dict):
        raise SpaceError(f"{source}: 'training' must be a mapping of training settings")
    training = dict(training)
    if "lora" in data:
        if "lora" in training:
            raise SpaceError(f"{source}: LoRA settings given twice, under 'lora' and 'training.lora': keep one")
        training["lora"] = data["lora"]
    _numbers_read_as_text(training, source)
    return TrainingConfig.from_dict(training, source=source)


def _numbers_read_as_text(settings: dict[str, Any], source: str) -> None:
    lora = settings.get("lora")
    items = list(settings.items()) + ([(f"lora.{k}", v) for k, v in lora.items()] if isinstance(lora, dict) else [])
    for key, value in items:
        problem = number_as_text(value)
        if problem:
            raise SpaceError(f"{source}: {key}: {problem}")


def load_config_file(path: str | Path) -> TrainingConfig:
    """Read a preset or TrainingConfig YAML file; SpaceError names the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(f"config file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpaceError(f"config file {str(path)!r} cannot be read: {error}") from None
    return config_from_data(read_yaml_text(text, str(path)), source=str(path))


def read_yaml_text(text: str, source: str) -> Any:
    """YAML text parsed, or SpaceError with the file, line and problem on one line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpaceError(f"{source}: not valid YAML{where}: {problem}") from None
