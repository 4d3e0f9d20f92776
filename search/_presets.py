"""Presets: the guide's built-in ones and those exported from studies.

The one place that finds presets by name or file and writes exported ones
(``studies/presets/NAME.yaml`` or ``.json``); ``export``, ``presets``, ``train``,
``check`` and the Python API all go through it.

An exported preset file holds:

- ``config``: the complete training settings for a full-size run (TrainingConfig
  layout, LoRA settings nested under ``lora:``), i.e. the winning trial's settings with
  the dataset-dependent ones re-derived for the whole training split;
- ``trial_config``: the settings exactly as the trial trained them on its sample;
- ``rederived``: for each setting that differs, both values and the reason;
- ``provenance``: study, trial, metric and value, baseline value, model, data,
  library versions and date.

A preset file given by path may take any form ``lora_search.spaces`` reads (an exported
document, a built-in's ``training:``/``lora:`` sections, or a flat mapping of settings);
spaces' reader is the one that reads them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import PresetError
from ._files import write_atomically
from .spaces import PEFT_TASK_TYPES, TrainingConfig, read_preset_file

if TYPE_CHECKING:
    from .spaces import LoraSettings

FORMATS = ("yaml", "json")
# other trainers' config files 'lora-search export --format' writes to studies/exports/NAME.SUFFIX
TRAINER_FORMATS = {"hf": "hf.json", "axolotl": "axolotl.yaml", "llama-factory": "llama-factory.yaml"}
# what names a preset file rather than a preset (find_preset)
PRESET_FILE_SUFFIXES = (".yaml", ".yml", ".json")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Preset:
    name: str
    source: str  # "built-in" or the file it was read from
    config: TrainingConfig
    document: dict[str, Any] | None = None  # the whole file it was read from; None for built-ins

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


def export_path(name: str, fmt: str) -> Path:
    """Where ``export --format FMT`` writes: a preset, or another trainer's file under studies/exports."""
    if fmt in TRAINER_FORMATS:
        return Path("studies") / "exports" / f"{name}.{TRAINER_FORMATS[fmt]}"
    return presets_dir() / f"{name}.{fmt}"


def existing_export(name: str, fmt: str) -> Path | None:
    """The file ``export --format FMT`` would replace: a preset in either format, or that trainer's file."""
    if fmt in TRAINER_FORMATS:
        path = export_path(name, fmt)
        return path if path.is_file() else None
    return exported_preset_path(name)


def check_preset_name(name: str) -> str:
    """A name safe as a file name in the presets folder; PresetError otherwise."""
    if not name or "/" in name or "\\" in name or ".." in name or not NAME_PATTERN.match(name):
        raise PresetError(
            f"preset name {name!r} is not allowed: use letters, digits, '-', '_' and '.', "
            "no path separators or '..' (the file goes to studies/presets/NAME.yaml)"
        )
    if name.endswith(PRESET_FILE_SUFFIXES):  # find_preset would read such a name as a file path
        raise PresetError(f"preset name {name!r} ends in a file suffix: give the name alone ({Path(name).stem!r}); --format chooses the file")
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


def _read_preset(path: Path, name: str | None = None) -> Preset:
    config, document = read_preset_file(path)
    return Preset(name or str(document.get("name") or path.stem), str(path), config, document)


def _names_a_file(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith(PRESET_FILE_SUFFIXES) or Path(text).is_file()


def find_preset(name_or_file: str) -> Preset:
    """A preset by file (a path, or a file in the current folder), exported name or built-in name."""
    from .spaces import get_preset, preset_names

    if _names_a_file(name_or_file):
        return _read_preset(Path(name_or_file).expanduser())
    path = exported_preset_path(name_or_file)
    if path is not None:
        return _read_preset(path, name_or_file)
    if name_or_file in preset_names():
        return Preset(name_or_file, "built-in", get_preset(name_or_file))
    known = [*preset_names(), *exported_preset_names()]
    raise PresetError(f"no preset named {name_or_file!r} (known: {', '.join(known)}; or give a preset file path)")


def load_preset(name: str) -> TrainingConfig:
    """The training settings of a built-in or exported preset (or a preset file)."""
    return find_preset(name).config


def write_preset(name: str, document: dict[str, Any], *, fmt: str = "yaml", force: bool = False) -> Path:
    """Write ``export_path(name, fmt)`` atomically (temp file + rename): the exported
    ``document``, or for a trainer format what that trainer reads (``trainer_document``).

    An existing file (a preset of that name in either format) is kept unless ``force``;
    a failed write leaves it untouched.
    """
    check_preset_name(name)
    if fmt not in FORMATS and fmt not in TRAINER_FORMATS:
        raise PresetError(f"unknown preset format {fmt!r}: choose {', '.join([*FORMATS, *TRAINER_FORMATS])}")
    existing = existing_export(name, fmt)
    if existing is not None and not force:
        raise PresetError(f"preset {name!r} already exists at {str(existing)!r}: pass --force to replace it, or choose another --name")
    target = export_path(name, fmt)
    if target.is_dir():
        raise PresetError(f"{str(target)!r} is a folder, not a preset: move it away or choose another --name")
    folder = target.parent
    text = render_document(trainer_document(document, fmt), fmt) if fmt in TRAINER_FORMATS else render_document(document, fmt)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PresetError(f"cannot create the folder {str(folder)!r}: {error.strerror}") from None
    try:
        write_atomically(target, text)
    except OSError as error:
        raise PresetError(f"cannot write to the folder {str(folder)!r}: {error.strerror}") from None
    if existing is not None and existing != target:
        existing.unlink()  # replaced in the other format: one file per name
    return target


def render_document(document: dict[str, Any], fmt: str) -> str:
    import yaml

    if fmt in ("json", "hf"):
        return json.dumps(document, indent=2) + "\n"
    if fmt in TRAINER_FORMATS:
        return f"# {fmt} config written by lora-search export\n" + yaml.safe_dump(document, sort_keys=False)
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


def trainer_document(document: dict[str, Any], fmt: str) -> dict[str, Any]:
    """An exported preset ``document`` as the config file trainer ``fmt`` loads.

    hf: ``TrainingArguments(**doc["training_arguments"])`` and ``LoraConfig(**doc["lora_config"])``
    under the installed transformers' names, and ``EarlyStoppingCallback(**doc["early_stopping"])``
    when its patience is above 0; axolotl and llama-factory: their YAML keys (neither has
    an early-stopping threshold; llama-factory no early stopping).
    The 'attention' target is written as peft's attention modules for the study's model, in
    every format.
    """
    from .objectives import model_location, quiet_libraries, training_arguments
    from .spaces import trainer_values

    quiet_libraries()  # peft imports bitsandbytes, whose notices are not this export's
    preset = Preset(document["name"], "export", TrainingConfig.from_dict(document["config"]), document)
    config, lora, output_dir = preset.config, preset.config.lora, f"out/{preset.name}"
    model = model_location(preset_workload(preset).model)[0]
    attention = None if lora.target_modules == "all-linear" else attention_modules(model)
    if fmt == "hf":
        arguments = training_arguments(config, output_dir=output_dir, metric_for_best_model=preset.metric,
                                       greater_is_better=preset.greater_is_better)
        early_stopping = {"early_stopping_patience": config.early_stopping_patience,
                          "early_stopping_threshold": config.early_stopping_threshold}
        lora_config = lora_config_kwargs(preset)
        if attention is not None:  # the names peft would pick for None, written out
            lora_config["target_modules"] = attention
        return {"training_arguments": arguments, "lora_config": lora_config, "early_stopping": early_stopping}
    precision = {"bf16": config.precision == "bf16", "fp16": config.precision == "fp16"}
    if fmt == "axolotl":
        values = trainer_values("axolotl", config)
        if config.eval_strategy == "epoch":  # axolotl takes one of the two
            del values["eval_steps"]
            values["evals_per_epoch"] = 1
        if not config.early_stopping_patience:
            del values["early_stopping_patience"]
        targets = {"lora_target_linear": attention is None, **({"lora_target_modules": attention} if attention else {})}
        return {"base_model": model, "adapter": "lora", "output_dir": output_dir, **values, **precision, **targets}
    return {  # llama-factory
        "model_name_or_path": model, "do_train": True, "finetuning_type": "lora", "output_dir": output_dir,
        **trainer_values("llama-factory", config), **precision,
        "disable_gradient_checkpointing": not config.gradient_checkpointing,
        "load_best_model_at_end": True, "metric_for_best_model": preset.metric, "greater_is_better": preset.greater_is_better,
        "lora_target": "all" if attention is None else ",".join(attention),
    }


def attention_modules(model: str) -> list[str]:
    """peft's default LoRA targets, the attention projections, for ``model``'s architecture."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(model).model_type
    if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        raise PresetError(f"peft has no default attention modules for model type {model_type!r}: search with target_modules all-linear")
    return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])


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


def train_preset(preset: str | Preset, output_dir: str, *, workload: dict[str, Any] | None = None, fit_to_data: bool = False,
                 progress: bool = True, report_to: tuple[str, ...] = ()) -> dict[str, Any]:
    """Full training with a preset (the adapter is saved in ``output_dir``); what its
    training.json holds: the splits, the fit, epochs and validation and test metrics.
    ``fit_to_data``: re-derive the preset's scale-dependent settings for the training
    split and machine first (``train_with_preset``).

    ``report_to`` trackers get one run ``PRESET/OUTPUT`` (``OUTPUT``: the output folder's
    name) in the group ``PRESET``, written beside the default storage (``studies/tracking``);
    under a distributed launch, by rank 0. A resumed training goes on with its interrupted run
    (MLflow, W&B online; TensorBoard's folder is the same anyway).
    """
    from ._progress import TrainingLine
    from ._tracking import open_group, tracking_for
    from .objectives import claim_output_folder, distributed_launch, quiet_libraries, train_with_preset

    tracking = tracking_for(report_to, None)  # a missing tracker package stops it before anything loads
    launch = distributed_launch()
    if launch is not None and launch.rank != 0:
        tracking = None  # the other ranks train the same run
    found = preset if isinstance(preset, Preset) else find_preset(preset)
    work = preset_workload(found, workload)
    quiet_libraries()
    claim_output_folder(output_dir)  # refused before the tracking lines
    if tracking is not None:
        open_group(tracking, found.name, quiet=not progress)
    tracked = tracking.run(found.name, Path(output_dir).resolve().name) if tracking is not None else None
    with TrainingLine("  training", work.metric, quiet=not progress) as line:
        return train_with_preset(work, found.config, output_dir, fit_to_data=fit_to_data, progress=progress,
                                 live=line if line.live else None, tracked=tracked)
