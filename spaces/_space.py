"""Search spaces as data: reading and validating scenario files and user files.

A space file (see ``scenarios/*.yaml``) has these top-level keys:

    name, description         one line each (name defaults to the file's stem)
    extends                   a built-in scenario whose parameters this file changes
    baseline_preset           the preset the search starts from (enqueued first)
    study                     defaults for a study: trials (16), timeout ("30m"), pruner
                              ("successive-halving"), rungs (3: the winner is chosen on up to
                              16x the proxy's data)
    constraints               effective_batch_size: {low, high}, across all devices
    training, lora            parameters, each in one of the forms of ``_catalog``
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _catalog
from ._catalog import BY_KEY, PARAMETERS, ParamInfo
from ._errors import SpaceError
from ._presets import preset_names, read_yaml_text
from ._training_config import LoraSettings, TrainingConfig
from ._units import number_as_text, parse_duration

if TYPE_CHECKING:
    from ._profile import RunProfile
    from ._resolve import ResolvedSpace

_TOP_KEYS = ("name", "description", "extends", "baseline_preset", "study", "constraints", "training", "lora")
_STUDY_KEYS = ("trials", "timeout", "pruner", "rungs")
# the pruners a study may name (the search package builds each: lora_search._samplers)
PRUNERS = ("successive-halving", "median", "percentile", "hyperband", "patient", "wilcoxon", "threshold", "none")
_SPEC_KEYS = ("low", "high", "log", "step", "choices", "rule")
DEFAULT_BASELINE = "standard"


@dataclass(frozen=True)
class StudyDefaults:
    """What ``lora-search run`` uses for a study of this space unless told otherwise."""

    trials: int | None = field(default=None, metadata={"help": "Finished trials a study should hold (run --trials); None: the run's default."})
    timeout_seconds: float | None = field(default=None, metadata={"help": "Stop starting trials after this long; None: no limit."})
    pruner: str | None = field(default=None, metadata={"help": "Pruner name; None: the run's default."})
    rungs: int | None = field(default=None, metadata={"help": "Data rungs for a new study (run --rungs); None: one fidelity."})


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as the file gives it: fixed, a range, choices and/or a rule."""

    key: str
    value: Any = None
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple[Any, ...] | None = None
    rule: str | None = None

    @property
    def form(self) -> str:
        if self.choices is not None:
            return "choices"
        if self.low is not None:
            return "range"
        if self.rule is not None:
            return "rule"
        return "fixed"


@dataclass(frozen=True)
class SearchSpace:
    """A scenario's search space, not yet fitted to a run; ``resolve`` fits it."""

    name: str
    description: str
    source: str
    baseline_preset: str
    study_defaults: StudyDefaults
    params: dict[str, ParamSpec]  # every key of the catalog, in sampling order
    effective_batch: tuple[int, int] | None  # the band (low, high) across all devices
    yaml: str | None = None  # the text of a user's space file (None: a built-in scenario), which a study stores

    def resolve(self, profile: RunProfile) -> ResolvedSpace:
        from ._resolve import ResolvedSpace

        return ResolvedSpace.build(self, profile)


def _scenario_files() -> dict[str, Any]:
    folder = resources.files(__package__) / "scenarios"
    return {entry.name[: -len(".yaml")]: entry for entry in folder.iterdir() if entry.name.endswith(".yaml")}


_SCENARIO_ORDER = ("quick-experiment", "standard", "production", "memory-constrained", "time-constrained")


def scenario_names() -> list[str]:
    """The built-in scenarios, in the guide's order."""
    files = _scenario_files()
    return [name for name in _SCENARIO_ORDER if name in files] + sorted(set(files) - set(_SCENARIO_ORDER))


def load_space(name_or_path: str | Path, text: str | None = None) -> SearchSpace:
    """A built-in scenario by name, or a space YAML file (which may extend a built-in).

    ``text`` is the file's content when it is already at hand (a study stores it):
    it is parsed as is, ``name_or_path`` naming it in messages and giving its default name.
    """
    label = str(name_or_path)
    if text is None:
        if label in _scenario_files():
            return _builtin(label)
        path = Path(label)
        if not path.exists():
            known = ", ".join(scenario_names())
            if path.suffix in (".yaml", ".yml") or "/" in label or "\\" in label:
                raise SpaceError(f"space file {label!r} not found (built-in spaces: {known})")
            raise SpaceError(f"unknown space {label!r}: choose one of {known}, or give a YAML file path")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise SpaceError(f"space file {label!r} cannot be read: {error}") from None
    space = _parse(read_yaml_text(text, label), source=label, default_name=Path(label).stem)
    return dataclasses.replace(space, yaml=text)


@functools.lru_cache(maxsize=None)
def _builtin(name: str) -> SearchSpace:
    entry = _scenario_files()[name]
    source = f"built-in scenario {name!r}"
    return _parse(read_yaml_text(entry.read_text(encoding="utf-8"), source), source=source, default_name=name)


# --- parsing ---------------------------------------------------------------------


def _parse(data: Any, *, source: str, default_name: str) -> SearchSpace:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: a space file is a mapping of {', '.join(_TOP_KEYS)}; got {type(data).__name__}")
    _unknown_keys(data, _TOP_KEYS, source, "key")

    base: SearchSpace | None = None
    if "extends" in data:
        parent = data["extends"]
        if not isinstance(parent, str) or parent not in _scenario_files():
            raise SpaceError(f"{source}: extends: {parent!r} is not a built-in scenario (choose one of {', '.join(scenario_names())})")
        base = _builtin(parent)

    name = _text(data, "name", source) or default_name
    description = _text(data, "description", source)
    if description is None:
        description = f"{base.description} (changed by {source})" if base else f"search space from {source}"
    baseline = _text(data, "baseline_preset", source) or (base.baseline_preset if base else DEFAULT_BASELINE)
    if baseline not in preset_names():
        raise SpaceError(f"{source}: baseline_preset {baseline!r} is not a preset (choose one of {', '.join(preset_names())})")

    study = _study_defaults(data.get("study"), source, base.study_defaults if base else StudyDefaults())
    band = _constraints(data.get("constraints"), source, base.effective_batch if base else None)

    params = dict(base.params) if base else _default_params()
    for section in ("training", "lora"):
        given = data.get(section)
        if given is None:
            continue
        if not isinstance(given, dict):
            raise SpaceError(f"{source}: '{section}' must be a mapping of parameters")
        _unknown_keys(given, _catalog.keys_in(section), source, f"{section} parameter")
        for key, raw in given.items():
            info = BY_KEY[key if section == "training" else f"lora.{key}"]
            params[info.key] = _parse_param(info, raw, f"{source}: {section}.{key}")

    _check_together(params, band, source)
    if not any(spec.form in ("range", "choices") for spec in params.values()):  # every trial would train the same config
        raise SpaceError(f"{source}: searches no parameter: give one a range ({{low: A, high: B}}) or choices, "
                         f"or start from a scenario with 'extends: NAME' ({', '.join(scenario_names())})")
    return SearchSpace(name, description, source, baseline, study, params, band)


def _default_params() -> dict[str, ParamSpec]:
    """Every parameter fixed at TrainingConfig's default (alpha_ratio from alpha / r)."""
    defaults = TrainingConfig()
    lora = LoraSettings()
    params = {}
    for info in PARAMETERS:
        if info.key == "lora.alpha_ratio":
            value: Any = lora.lora_alpha / lora.r
        elif info.section == "lora":
            value = getattr(lora, info.field)
        else:
            value = getattr(defaults, info.key)
        params[info.key] = ParamSpec(info.key, value=value)
    return params


def _unknown_keys(data: dict[str, Any], known: Any, source: str, what: str) -> None:
    for key in data:
        if key not in known:
            raise SpaceError(f"{source}: unknown {what} {key!r} (known: {', '.join(known)})")


def _text(data: dict[str, Any], key: str, source: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise SpaceError(f"{source}: {key} must be text, got {value!r}")
    return value


def _study_defaults(raw: Any, source: str, inherited: StudyDefaults) -> StudyDefaults:
    if raw is None:
        return inherited
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: 'study' must be a mapping with {', '.join(_STUDY_KEYS)}")
    _unknown_keys(raw, _STUDY_KEYS, source, "study setting")
    result = inherited
    if "trials" in raw:
        trials = raw["trials"]
        if trials is not None and not (type(trials) is int and trials >= 1):
            raise SpaceError(f"{source}: study.trials must be a whole number of at least 1, got {trials!r}")
        result = dataclasses.replace(result, trials=trials)
    if "timeout" in raw:
        timeout = raw["timeout"]
        try:
            seconds = None if timeout is None else parse_duration(timeout)
        except SpaceError as error:
            raise SpaceError(f"{source}: study.timeout: {error}") from None
        result = dataclasses.replace(result, timeout_seconds=seconds)
    if "pruner" in raw:
        pruner = raw["pruner"]
        if pruner is not None and pruner not in PRUNERS:
            raise SpaceError(f"{source}: study.pruner must be a pruner name ({', '.join(PRUNERS)}), got {pruner!r}")
        result = dataclasses.replace(result, pruner=pruner)
    if "rungs" in raw:
        rungs = raw["rungs"]
        if rungs is not None and not (type(rungs) is int and rungs >= 1):
            raise SpaceError(f"{source}: study.rungs must be a whole number of at least 1 (1: one fidelity), got {rungs!r}")
        result = dataclasses.replace(result, rungs=rungs)
    return result


def _constraints(raw: Any, source: str, inherited: tuple[int, int] | None) -> tuple[int, int] | None:
    if raw is None:
        return inherited
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: 'constraints' must be a mapping with effective_batch_size")
    _unknown_keys(raw, (_catalog.EFFECTIVE_BATCH,), source, "constraint")
    band = raw.get(_catalog.EFFECTIVE_BATCH)
    if band is None:
        return None
    where = f"{source}: constraints.{_catalog.EFFECTIVE_BATCH}"
    if not isinstance(band, dict) or set(band) != {"low", "high"}:
        raise SpaceError(f"{where}: give the band as {{low: N, high: M}} (examples per optimizer step, all devices)")
    low, high = (_typed(int, band[end], f"{where}.{end}") for end in ("low", "high"))
    if low < 1:
        raise SpaceError(f"{where}: low must be at least 1, got {low}")
    if low > high:
        raise SpaceError(f"{where}: low {low} is above high {high}")
    return (low, high)


def _typed(kind: type, value: Any, where: str) -> Any:
    """``value`` as ``kind``, or SpaceError saying what was found instead."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SpaceError(f"{where}: expected true or false, got {value!r}")
    if kind in (int, float):
        problem = number_as_text(value)
        if problem:
            raise SpaceError(f"{where}: {problem}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpaceError(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
        if kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise SpaceError(f"{where}: expected an integer, got {value!r}")
                value = int(value)
            return value
        return float(value)
    if not isinstance(value, str):
        raise SpaceError(f"{where}: expected text, got {value!r}")
    return value


def _check_step_divides(low: float, high: float, step: float, where: str) -> None:
    """Optuna quietly lowers a high that is not low plus a whole number of steps (with a
    warning): the space would search less than its file and 'spaces show' say."""
    span, stride = Decimal(str(high)) - Decimal(str(low)), Decimal(str(step))  # decimal: 0.3 - 0.1 is not 0.2 in floats
    if span % stride:
        top = Decimal(str(low)) + span // stride * stride
        raise SpaceError(f"{where}: step {step!r} does not divide the range {low!r} to {high!r}, so only {low!r} to {top} "
                         f"would be searched: make high {top} or {top + stride}, or the step a divisor of {span}")


def _check_value(info: ParamInfo, value: Any, where: str) -> Any:
    """Type-check one value and test it the way TrainingConfig/LoraSettings would."""
    value = _typed(info.type, value, where)
    if info.options is not None and value not in info.options:
        raise SpaceError(f"{where}: {value!r} is not one of {', '.join(info.options)}")
    if info.key == "lora.alpha_ratio":
        if not value > 0:
            raise SpaceError(f"{where}: the ratio alpha / r must be positive, got {value!r}")
        return value
    try:
        if info.section == "lora":
            dataclasses.replace(LoraSettings(), **{info.field: value})
        else:
            dataclasses.replace(TrainingConfig(), **{info.key: value})
    except SpaceError as error:
        problem = str(error).split(": ", 1)[-1]
        raise SpaceError(f"{where}: {problem}") from None
    return value


def _parse_param(info: ParamInfo, raw: Any, where: str) -> ParamSpec:
    if not isinstance(raw, dict):
        if raw is None or isinstance(raw, list):
            raise SpaceError(f"{where}: give a value, {{low, high}}, {{choices: [...]}} or {{rule: ...}}, got {raw!r}")
        return ParamSpec(info.key, value=_check_value(info, raw, where))
    for key in raw:
        if key not in _SPEC_KEYS:
            raise SpaceError(f"{where}: unknown setting {key!r} (known: {', '.join(_SPEC_KEYS)})")
    rule = raw.get("rule")
    if rule is not None:
        if info.rule is None:
            raise SpaceError(f"{where}: has no rule; give a value, a range or choices")
        if rule != info.rule.name:
            raise SpaceError(f"{where}: unknown rule {rule!r} (this parameter's rule is {info.rule.name!r}: {info.rule.help})")
    has_range = "low" in raw or "high" in raw
    has_choices = "choices" in raw
    if has_range and has_choices:
        raise SpaceError(f"{where}: give either low/high or choices, not both")
    if (has_range or has_choices) and not info.searchable:
        raise SpaceError(f"{where}: cannot be searched; give a fixed value or {{rule: {info.rule.name}}}")  # type: ignore[union-attr]
    if (has_range or has_choices) and rule is not None and not info.rule.narrows:  # type: ignore[union-attr]
        raise SpaceError(f"{where}: rule {rule!r} derives the value; drop low/high/choices or drop the rule")
    if has_choices:
        if any(k in raw for k in ("log", "step")):
            raise SpaceError(f"{where}: log and step apply to low/high ranges, not choices")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: choices must be a non-empty list, got {choices!r}")
        checked = tuple(_check_value(info, choice, f"{where} choice") for choice in choices)
        if len(set(checked)) != len(checked):
            raise SpaceError(f"{where}: choices repeat a value: {list(choices)}")
        return ParamSpec(info.key, choices=checked, rule=rule)
    if has_range:
        if info.type not in (int, float) or not info.ranged:
            raise SpaceError(f"{where}: takes choices, not low/high")
        if "low" not in raw or "high" not in raw:
            raise SpaceError(f"{where}: a range needs both low and high")
        low = _check_value(info, raw["low"], f"{where}.low")
        high = _check_value(info, raw["high"], f"{where}.high")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise SpaceError(f"{where}.log: expected true or false, got {log!r}")
        step = raw.get("step")
        if step is not None:
            step = _typed(info.type, step, f"{where}.step")
            if not step > 0:
                raise SpaceError(f"{where}.step: must be positive, got {step!r}")
            if log:
                raise SpaceError(f"{where}: a log-scale range cannot have a step (Optuna allows one or the other)")
        if low > high:
            raise SpaceError(f"{where}: low {low!r} is above high {high!r}")
        if log and low <= 0:
            raise SpaceError(f"{where}: a log-scale range needs low > 0, got low {low!r}")
        if step is not None:
            _check_step_divides(low, high, step, where)
        return ParamSpec(info.key, low=low, high=high, log=log, step=step, rule=rule)
    if any(k in raw for k in ("log", "step")):
        raise SpaceError(f"{where}: log and step need a low/high range")
    if rule is None:
        raise SpaceError(f"{where}: empty setting; give a value, {{low, high}}, {{choices: [...]}} or {{rule: ...}}")
    if info.rule.narrows and not info.ranged:  # type: ignore[union-attr]
        raise SpaceError(f"{where}: rule {rule!r} narrows choices; give choices too, e.g. {{choices: [2, 4, 8], rule: {rule}}}")
    return ParamSpec(info.key, rule=rule)


def _check_together(params: dict[str, ParamSpec], band: tuple[int, int] | None, source: str) -> None:
    """Rules between parameters, checked once the whole file is read."""
    accumulation = params["gradient_accumulation_steps"]
    if accumulation.rule is not None:
        if band is None:
            raise SpaceError(f"{source}: training.gradient_accumulation_steps: rule effective-batch needs constraints.effective_batch_size {{low, high}}")
    per_device = params["per_device_train_batch_size"]
    if band is not None and per_device.rule is None:  # a memory rule may lower the choices on a small GPU
        smallest = min(per_device.choices) if per_device.choices is not None else per_device.value
        steps = accumulation.value if accumulation.form == "fixed" else 1
        if smallest * steps > band[1]:
            raise SpaceError(
                f"{source}: the smallest per-device batch {smallest} x {steps} accumulation already exceeds the effective "
                f"batch band's high {band[1]} (constraints.effective_batch_size): lower the choices or widen the band"
            )
    eval_steps, save_steps = params["eval_steps"], params["save_steps"]
    if eval_steps.form != "fixed" and save_steps.rule is None:
        raise SpaceError(f"{source}: training.save_steps: eval_steps varies, so checkpoints must follow it: write save_steps: {{rule: eval-steps}}")
    if eval_steps.form == "fixed" and save_steps.form == "fixed" and save_steps.value % eval_steps.value:
        raise SpaceError(
            f"{source}: training.save_steps: {save_steps.value} is not a multiple of eval_steps {eval_steps.value}; "
            "the best checkpoint can only be kept when saves fall on evaluations"
        )

