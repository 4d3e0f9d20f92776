"""Presets: the guide's built-in ones and those exported from studies.

The one place that reads and writes exported presets (``studies/presets/NAME.yaml`` or
``.json``); ``export``, ``presets``, ``train`` and the Python API all go through it.

An exported preset file holds:

- ``config``: the complete training settings for a full-size run (TrainingConfig
  layout, LoRA settings nested under ``lora:``), i.e. the winning trial's settings with
  the dataset-dependent ones re-derived for the whole training split;
- ``trial_config``: the settings exactly as the trial trained them on its sample;
- ``rederived``: for each setting that differs, both values and the reason;
- ``provenance``: study, trial, metric and value, baseline value, model, data,
  library versions and date.

A file given by path may also be a bare mapping of training settings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._files import write_atomically
from ._errors import PresetError
from .spaces import PEFT_TASK_TYPES, TrainingConfig

if TYPE_CHECKING:
    from .spaces import LoraSettings

FORMATS = ("yaml", "json")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Preset:
    name: str
    source: str  # "built-in" or the file it was read from
    config: TrainingConfig
    document: dict[str, Any] | None = None  # the whole exported file; None for built-ins

    @property
    def provenance(self) -> dict[str, Any]:
        return (self.document or {}).get("provenance", {})

    @property
    def metric(self) -> str:
        return self.provenance.get("metric", "eval_loss")

    @property
    def greater_is_better(self) -> bool:
        return self.provenance.get("direction") == "maximize"

    @property
    def task_type(self) -> str:
        """peft's task type for the model this preset was searched on (SEQ_CLS by default)."""
        task = self.provenance.get("task") or (self.provenance.get("workload") or {}).get("task")
        return PEFT_TASK_TYPES.get(task, "SEQ_CLS")


def presets_dir() -> Path:
    """Where exported presets live: studies/presets under the current folder."""
    return Path("studies") / "presets"


def check_preset_name(name: str) -> str:
    """A name safe as a file name in the presets folder; PresetError otherwise."""
    if not name or "/" in name or "\\" in name or ".." in name or not NAME_PATTERN.match(name):
        raise PresetError(
            f"preset name {name!r} is not allowed: use letters, digits, '-', '_' and '.', "
            "no path separators or '..' (the file goes to studies/presets/NAME.yaml)"
        )
    return name


def exported_preset_names() -> list[str]:
    folder = presets_dir()
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir() if p.suffix in (".yaml", ".json") and p.is_file()})


def exported_preset_path(name: str) -> Path | None:
    """The file of an exported preset, or None."""
    for suffix in (".yaml", ".json"):
        path = presets_dir() / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _read_document(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PresetError(f"cannot read preset file {str(path)!r}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PresetError(f"preset file {str(path)!r} is not valid {path.suffix[1:].upper()}: {first}") from None
    if not isinstance(data, dict):
        raise PresetError(f"preset file {str(path)!r} must hold a mapping, not {type(data).__name__}")
    return data


def read_preset_file(path: Path, name: str | None = None) -> Preset:
    """An exported preset document, or a bare mapping of training settings."""
    document = _read_document(path)
    if "config" in document:
        config = TrainingConfig.from_dict(document["config"], source=f"{path}: config")
        return Preset(name or str(document.get("name") or path.stem), str(path), config, document)
    return Preset(name or path.stem, str(path), TrainingConfig.from_dict(document, source=str(path)))


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith((".yaml", ".yml", ".json"))


def find_preset(name_or_file: str) -> Preset:
    """A preset by file path, exported name or built-in name (in that order)."""
    from .spaces import get_preset, preset_names

    if _looks_like_path(name_or_file):
        path = Path(name_or_file).expanduser()
        if not path.is_file():
            raise PresetError(f"no preset file {name_or_file!r}")
        return read_preset_file(path)
    path = exported_preset_path(name_or_file)
    if path is not None:
        return read_preset_file(path, name_or_file)
    if name_or_file in preset_names():
        return Preset(name_or_file, "built-in", get_preset(name_or_file))
    known = [*preset_names(), *exported_preset_names()]
    raise PresetError(f"no preset named {name_or_file!r} (known: {', '.join(known)}; or give a preset file path)")


def load_preset(name: str) -> TrainingConfig:
    """The training settings of a built-in or exported preset (or a preset file)."""
    return find_preset(name).config


def write_preset(name: str, document: dict[str, Any], *, fmt: str = "yaml", force: bool = False) -> Path:
    """Write ``studies/presets/NAME.FMT`` atomically (temp file + rename).

    An existing preset of that name (in either format) is kept unless ``force``; a
    failed write leaves it untouched.
    """
    check_preset_name(name)
    if fmt not in FORMATS:
        raise PresetError(f"unknown preset format {fmt!r}: choose yaml or json")
    existing = exported_preset_path(name)
    if existing is not None and not force:
        raise PresetError(f"preset {name!r} already exists at {str(existing)!r}: pass --force to replace it, or choose another --name")
    folder = presets_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PresetError(f"cannot create the presets folder {str(folder)!r}: {error.strerror}") from None
    target = folder / f"{name}.{fmt}"
    text = render_document(document, fmt)
    try:
        write_atomically(target, text)
    except OSError as error:
        raise PresetError(f"cannot write to the presets folder {str(folder)!r}: {error.strerror}") from None
    if existing is not None and existing != target:
        existing.unlink()  # replaced in the other format: one file per name
    return target


def render_document(document: dict[str, Any], fmt: str) -> str:
    import yaml

    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    header = f"# lora-search preset {document.get('name', '')}: train with 'lora-search train --preset {document.get('name', 'NAME')}'\n"
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


# --- conversion to transformers and peft -------------------------------------------------


def _config_of(preset: str | TrainingConfig | Preset) -> tuple[TrainingConfig, Preset | None]:
    if isinstance(preset, TrainingConfig):
        return preset, None
    if isinstance(preset, Preset):
        return preset.config, preset
    found = find_preset(preset)
    return found.config, found


def training_arguments_kwargs(preset: str | TrainingConfig | Preset, output_dir: str = "lora-output") -> dict[str, Any]:
    """Keyword arguments for ``transformers.TrainingArguments`` (the preset's metric picks the best checkpoint)."""
    config, found = _config_of(preset)
    metric = found.metric if found is not None else "eval_loss"
    greater = found.greater_is_better if found is not None else False
    return {"output_dir": output_dir, **config.to_training_arguments_kwargs(metric, greater)}


def lora_config_kwargs(preset: str | TrainingConfig | Preset, task_type: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``peft.LoraConfig`` (task type from the preset's study, else SEQ_CLS)."""
    config, found = _config_of(preset)
    lora: LoraSettings = config.lora
    return lora.to_lora_config_kwargs(task_type or (found.task_type if found is not None else "SEQ_CLS"))


def to_training_arguments(preset: str | TrainingConfig | Preset, output_dir: str = "lora-output", **overrides: Any) -> Any:
    """A ``transformers.TrainingArguments`` for the preset; ``overrides`` win (e.g. ``use_cpu=True``)."""
    from transformers import TrainingArguments

    return TrainingArguments(**{**training_arguments_kwargs(preset, output_dir), **overrides})


def to_lora_config(preset: str | TrainingConfig | Preset, task_type: str | None = None) -> Any:
    """A ``peft.LoraConfig`` for the preset."""
    from peft import LoraConfig

    return LoraConfig(**lora_config_kwargs(preset, task_type))


def as_call(function: str, kwargs: dict[str, Any]) -> str:
    """``TrainingArguments(\\n    output_dir='out',\\n ...)``: kwargs as Python a person can paste."""
    lines = [f"{function}("]
    lines += [f"    {key}={value!r}," for key, value in kwargs.items()]
    lines.append(")")
    return "\n".join(lines)


# --- training with a preset ----------------------------------------------------------


def preset_workload(preset: Preset, overrides: dict[str, Any] | None = None) -> Any:
    """The Workload to train a preset on: its study's model and data, then ``overrides``."""
    from .objectives import Workload

    stored = preset.provenance.get("workload") or {}
    return Workload.from_dict({**Workload().to_dict(), **stored, **(overrides or {})})


def train_preset(preset: str | Preset, output_dir: str, *, workload: dict[str, Any] | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Full training with a preset (the adapter is saved in ``output_dir``); the final metrics."""
    from .objectives import train_with_preset

    found = preset if isinstance(preset, Preset) else find_preset(preset)
    return train_with_preset(preset_workload(found, workload), found.config, output_dir, progress=progress)
