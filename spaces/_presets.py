"""The guide's named configurations, stored as data under ``presets/``, and the one preset reader.

A preset or config file (YAML, or JSON by its ``.json`` suffix) takes one of lora-search's
three forms, or another trainer's (see ``_formats``: Hugging Face TrainingArguments and
LoraConfig keys, or axolotl's YAML):

- what ``lora-search export`` writes: the complete settings under ``config:`` (LoRA
  nested under ``lora:``), beside ``trial_config``, ``rederived`` and ``provenance``;
- what the built-in presets hold, naming only what they change from the defaults::

      description: one line
      training: {num_train_epochs: 3, ...}   # TrainingConfig fields
      lora: {r: 16, ...}                     # LoraSettings fields (optional)

- a flat mapping of TrainingConfig fields, LoRA nested under ``lora:``.

Keys beside the settings (description, provenance, ...) are for people and ignored. An
alias file holds ``alias_of: OTHER`` and nothing else: the built-in preset OTHER.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Hashable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ._errors import SpaceError
from ._formats import foreign_form, foreign_settings
from ._training_config import TrainingConfig
from ._units import number_as_text

_SETTINGS_SECTIONS = ("config", "training")


def _preset_files() -> dict[str, Any]:
    folder = resources.files(__package__) / "presets"
    return {entry.name[: -len(".yaml")]: entry for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def _builtin_document(name: str) -> dict[str, Any]:
    files = _preset_files()
    if name not in files:
        raise SpaceError(f"unknown preset {name!r}: the built-in presets are {', '.join(preset_names())}")
    return yaml.safe_load(files[name].read_text(encoding="utf-8"))


def preset_names() -> list[str]:
    """The built-in preset names: the five scenarios and the guide's quick/standard/intensive."""
    return sorted(_preset_files())


@functools.lru_cache(maxsize=None)
def get_preset(name: str) -> TrainingConfig:
    """The built-in preset ``name`` with the guide's exact numbers (aliases followed)."""
    return config_from_data(_builtin_document(name), source=f"preset {name!r}")


def alias_target(name: str) -> str | None:
    """The preset an alias points at, or None for a preset with its own numbers."""
    return _builtin_document(name).get("alias_of") if name in _preset_files() else None


def config_from_data(data: Any, *, source: str, from_yaml: bool = True) -> TrainingConfig:
    """A TrainingConfig from a preset document in any of the three forms, or another trainer's.

    ``from_yaml``: numbers YAML left as text ('1e-5') are refused with the fix (another
    trainer's file has them read as numbers, as that trainer does); in JSON text is text,
    and the type check of TrainingConfig says so.
    """
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping of training settings, got {type(data).__name__}")
    if "alias_of" in data:
        return get_preset(str(data["alias_of"]))
    sections = [key for key in _SETTINGS_SECTIONS if key in data]
    if len(sections) > 1:
        raise SpaceError(f"{source}: training settings given twice, under 'config' and 'training': keep one")
    if sections:
        section = sections[0]
        settings = data[section] or {}
        if not isinstance(settings, dict):
            raise SpaceError(f"{source}: '{section}' must be a mapping of training settings")
        settings = dict(settings)
        if "lora" in data:
            if "lora" in settings:
                raise SpaceError(f"{source}: LoRA settings given twice, under 'lora' and '{section}.lora': keep one")
            settings["lora"] = data["lora"]
    elif form := foreign_form(data):
        return TrainingConfig.from_dict(foreign_settings(data, form, source=source, from_yaml=from_yaml), source=source)
    else:
        settings = data
    if from_yaml:
        _numbers_read_as_text(settings, source)
    return TrainingConfig.from_dict(settings, source=source)


def _numbers_read_as_text(settings: dict[str, Any], source: str) -> None:
    lora = settings.get("lora")
    items = list(settings.items()) + ([(f"lora.{k}", v) for k, v in lora.items()] if isinstance(lora, dict) else [])
    for key, value in items:
        problem = number_as_text(value)
        if problem:
            raise SpaceError(f"{source}: {key}: {problem}")


def read_preset_file(path: str | Path) -> tuple[TrainingConfig, dict[str, Any]]:
    """The settings of a preset or config file and its whole document (provenance and all).

    SpaceError names the file and the problem on one line.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(f"no preset file {source!r}: not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpaceError(f"preset file {source!r} cannot be read: {error}") from None
    from_yaml = path.suffix != ".json"
    document = read_yaml_text(text, source) if from_yaml else _read_json_text(text, source)
    return config_from_data(document, source=source, from_yaml=from_yaml), document


def load_config_file(path: str | Path) -> TrainingConfig:
    """The settings of a preset or config file (see ``read_preset_file``)."""
    return read_preset_file(path)[0]


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error: YAML's last
    value would win without a word, and the first is usually the one being edited."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *defaults' merges, and its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader's own error names it
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_text(text: str, source: str) -> Any:
    """YAML text parsed, or SpaceError with the file, line and problem on one line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpaceError(f"{source}: not valid YAML{where}: {problem}") from None


def _read_json_text(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SpaceError(f"{source}: not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}") from None
