"""A search space fitted to a run profile: the distributions Optuna samples from.

Resolving applies the guide's rules to the profile once, so every distribution is
fixed for a given profile (Optuna requires one distribution per parameter name in a
study) and every sample satisfies the rules without rejection:

- narrowing rules intersect the space's ranges and choices with what the guide allows
  for the dataset size, the GPU memory and the model size;
- the effective batch (per-device x accumulation x devices) is sampled from the
  doublings of the smallest step that lie in the scenario's band, together with a
  per-device batch that divides every one of them; accumulation then follows as
  effective / (per-device x devices), so every pairing lands in the band;
- warmup, evaluation cadence, precision, checkpointing and alpha are worked out after
  sampling and recorded as trial user attributes "derived.<name>"; early-stopping
  patience is lowered where a trial evaluates too few times for it to fire.

When a space's own values and a rule do not overlap, one side wins and the note says
which. The top of the guide's per-device batch row is a hard limit (too large a batch
fails with out-of-memory), so it wins over the space. Its bottom is advice: a smaller
batch fits and only runs slower, and a scenario of small batches may be sized for a
large model the table does not know, so there the space's choices stand. The
dataset-size and model-size bands are the guide's rule for this very run, while a
space's range was written without knowing the data or the model, so there the band
wins and its bound nearest the space's range is taken.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _rules
from ._catalog import BY_KEY, EFFECTIVE_BATCH, PARAMETERS, ParamInfo
from ._errors import SpaceError
from ._presets import get_preset
from ._profile import RunProfile
from ._space import ParamSpec, SearchSpace
from ._training_config import LoraSettings, TrainingConfig
from ._units import format_count

if TYPE_CHECKING:
    import optuna

PER_DEVICE = "per_device_train_batch_size"
ACCUMULATION = "gradient_accumulation_steps"
PATIENCE = "early_stopping_patience"


@dataclass(frozen=True)
class Resolved:
    """One parameter for one profile: fixed, an Optuna distribution, or derived by a rule."""

    key: str
    kind: str  # "fixed" | "int" | "float" | "categorical" | "derived"
    value: Any = None  # fixed value; for derived values known from the profile alone, that value
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple[Any, ...] = ()
    note: str = ""

    @property
    def sampled(self) -> bool:
        return self.kind in ("int", "float", "categorical")

    def draw(self, trial: optuna.trial.BaseTrial) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        return self.value

    def member(self, value: Any, what: str) -> Any:
        """``value`` as this distribution holds it, or SpaceError when outside it."""
        if self.kind == "categorical":
            for choice in self.choices:
                if choice == value and isinstance(choice, bool) == isinstance(value, bool):
                    return choice
            raise SpaceError(f"{what}: {self.key} = {_fmt(value)} is not one of {', '.join(map(_fmt, self.choices))}")
        tolerance = 1e-12 * max(1.0, abs(self.high))
        if not self.low - tolerance <= value <= self.high + tolerance:
            raise SpaceError(f"{what}: {self.key} = {_fmt(value)} is outside {_fmt(self.low)}..{_fmt(self.high)}")
        return int(value) if self.kind == "int" else float(value)

    def snap(self, value: Any) -> Any:
        """The member of this distribution nearest ``value`` (ties to the smaller)."""
        if self.kind == "categorical":
            if value in self.choices:
                return self.member(value, "")
            if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in self.choices) and isinstance(value, (int, float)):
                return min(self.choices, key=lambda c: (abs(math.log(c / value)) if c > 0 and value > 0 else abs(c - value), c))
            return self.choices[0]
        clamped = min(max(value, self.low), self.high)
        if self.step:
            clamped = self.low + round((clamped - self.low) / self.step) * self.step
            clamped = min(clamped, self.high)
        return int(round(clamped)) if self.kind == "int" else float(clamped)

    def text(self) -> str:
        if self.kind in ("int", "float"):
            extra = " (log)" if self.log else (f" step {_fmt(self.step)}" if self.step else "")
            return f"{_fmt(self.low)} .. {_fmt(self.high)}{extra}"
        if self.kind == "categorical":
            return "one of " + ", ".join(map(_fmt, self.choices))
        if self.kind == "derived":
            return f"= {_fmt(self.value)} (rule)" if self.value is not None else "by rule"
        return f"= {_fmt(self.value)}"


@dataclass(frozen=True)
class ResolvedSpace:
    """A space fitted to a profile. Build it with ``SearchSpace.resolve(profile)``."""

    space: SearchSpace
    profile: RunProfile
    params: tuple[Resolved, ...]  # in sampling order

    @classmethod
    def build(cls, space: SearchSpace, profile: RunProfile) -> ResolvedSpace:
        if not isinstance(profile, RunProfile):
            raise SpaceError(f"resolve needs a RunProfile, got {type(profile).__name__}")
        resolved = {info.key: _resolve_param(info, space.params[info.key], profile, space.source) for info in PARAMETERS}
        if resolved[PATIENCE].sampled or resolved[PATIENCE].value:
            resolved[PATIENCE] = dataclasses.replace(
                resolved[PATIENCE], note="lowered to evaluations - 1 in a trial that evaluates fewer times, else it never fires")
        per_device, effective, accumulation = _batch_plan(space, resolved[PER_DEVICE], resolved[ACCUMULATION], profile)
        resolved[PER_DEVICE], resolved[ACCUMULATION] = per_device, accumulation
        ordered: list[Resolved] = []
        for info in PARAMETERS:
            ordered.append(resolved[info.key])
            if info.key == PER_DEVICE and effective is not None:
                ordered.append(effective)
        return cls(space, profile, tuple(ordered))

    def get(self, key: str) -> Resolved:
        for param in self.params:
            if param.key == key:
                return param
        raise KeyError(key)

    @property
    def accumulation_derived(self) -> bool:
        return self.get(ACCUMULATION).kind == "derived"

    # --- sampling ---------------------------------------------------------------------

    def sample(self, trial: optuna.trial.BaseTrial) -> TrainingConfig:
        """Draw every searched parameter from ``trial`` and derive the rest by the rules."""
        values = {param.key: param.draw(trial) for param in self.params}
        config, derived = self._complete(values)
        for name, value in derived.items():
            trial.set_user_attr(f"derived.{name}", value)
        return config

    def _complete(self, values: dict[str, Any]) -> tuple[TrainingConfig, dict[str, Any]]:
        profile = self.profile
        per_device = values[PER_DEVICE]
        if self.accumulation_derived:
            effective = values[EFFECTIVE_BATCH]
            if effective % (per_device * profile.devices):
                raise SpaceError(
                    f"effective batch {effective} is not a multiple of {per_device} per device x {profile.devices} devices"
                )
        else:
            effective = per_device * values[ACCUMULATION] * profile.devices
        derived_keys = [param.key for param in self.params if param.kind == "derived"]
        plan = _rules.plan_steps(
            profile.dataset_size, effective, per_device, profile.devices,
            num_train_epochs=values["num_train_epochs"], lr_scheduler_type=values["lr_scheduler_type"],
            eval_strategy=values["eval_strategy"], eval_steps=None if "eval_steps" in derived_keys else values["eval_steps"],
        )
        derived: dict[str, Any] = {
            "effective_batch_size": plan.effective_batch_size,
            "steps_per_epoch": plan.steps_per_epoch,
            "total_steps": plan.total_steps,
            "evaluations": plan.evaluations,
        }
        values[PATIENCE] = _rules.patience_that_fires(values[PATIENCE], plan.evaluations)
        for key in derived_keys:
            # what follows from the profile alone was worked out on resolving (the drawn value)
            if hasattr(plan, key):
                values[key] = getattr(plan, key)
            derived[key] = values[key]

        alpha = values["lora.r"] * values["lora.alpha_ratio"]
        alpha = int(alpha) if float(alpha).is_integer() else alpha
        derived["lora_alpha"] = alpha
        lora = LoraSettings(
            r=values["lora.r"],
            lora_alpha=alpha,
            lora_dropout=values["lora.lora_dropout"],
            target_modules=values["lora.target_modules"],
            use_rslora=values["lora.use_rslora"],
            use_dora=values["lora.use_dora"],
        )
        training = {info.key: values[info.key] for info in PARAMETERS if info.section == "training"}
        try:
            return TrainingConfig(**training, lora=lora), derived
        except SpaceError as error:
            raise SpaceError(f"{self.space.source}: {error}") from None

    # --- presets in the space --------------------------------------------------------------

    def params_for(self, config: TrainingConfig) -> dict[str, Any]:
        """The trial parameters for which ``sample`` returns ``config``.

        SpaceError when ``config`` lies outside this space for this profile.
        """
        from optuna.trial import FixedTrial

        what = f"config not in space {self.space.name!r}"
        params = {p.key: self._drawn(p, config, what) for p in self.params if p.sampled}
        got = self.sample(FixedTrial(params))
        if got != config:
            wanted, given = config.flat(), got.flat()
            field = next(name for name in wanted if wanted[name] != given[name])
            raise SpaceError(
                f"{what}: {field} is {_fmt(wanted[field])}, but for {self.profile.describe()} the space gives {_fmt(given[field])}"
            )
        return params

    def baseline(self) -> TrainingConfig:
        """The point of this space nearest the scenario's preset: each searched value snapped
        to the nearest allowed one, everything the rules derive re-derived for this profile.
        Its params label the baseline trial for the sampler; the trial trains ``guide()``."""
        from optuna.trial import FixedTrial

        preset = get_preset(self.space.baseline_preset)
        params = {p.key: p.snap(self._value_of(p.key, preset)) for p in self.params if p.sampled}
        return self.sample(FixedTrial(params))

    def guide(self) -> TrainingConfig:
        """The scenario's preset itself, fitted to this profile by the guide's rules: what
        ``train --preset P --fit-to-data`` trains on this data, and so what the baseline trial
        trains, at every rung. It may lie outside the space (every guide preset steps with 16
        examples, where most spaces start at 32): a baseline moved into the space is not the
        arm a user compares with (benchmarks/README.md, section 7, variant 11: moved, it trained
        10.6% worse than the preset fitted, and won the top rung)."""
        from ._check import rederive_for_dataset

        return rederive_for_dataset(get_preset(self.space.baseline_preset), self.profile)[0]

    def values_of(self, config: TrainingConfig) -> dict[str, Any]:
        """``config``'s value of each searched parameter, under the trial's names, inside the
        space or not (the baseline's settings shown beside the trials')."""
        return {p.key: self._value_of(p.key, config) for p in self.params if p.sampled}

    def _drawn(self, param: Resolved, config: TrainingConfig, what: str) -> Any:
        """The trial value that gives ``config``'s value (``sample`` then confirms it)."""
        try:
            return param.member(self._value_of(param.key, config), what)
        except SpaceError:
            if param.key != PATIENCE:
                raise
            # a patience lowered to fit the trial's evaluations: the largest draw lowers to it too
            return max(param.choices) if param.kind == "categorical" else param.high

    def _value_of(self, key: str, config: TrainingConfig) -> Any:
        if key == EFFECTIVE_BATCH:
            return config.effective_batch_size * self.profile.devices
        if key == "lora.alpha_ratio":
            return config.lora.lora_alpha / config.lora.r
        if key.startswith("lora."):
            return getattr(config.lora, key[len("lora."):])
        return getattr(config, key)

    # --- display ------------------------------------------------------------------------

    def rows(self) -> list[tuple[str, str, str]]:
        """(parameter, range or choices, note) for every parameter, for tables."""
        rows = []
        for param in self.params:
            rows.append((param.key, param.text(), param.note))
            if param.key == "lora.alpha_ratio":
                rows.append(("lora.lora_alpha", "by rule", "lora.r x alpha_ratio (alpha = r or 2r)"))
        return rows


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}" if value >= 10_000 else str(value)
    return str(value)


# --- resolving one parameter -------------------------------------------------------------


def _resolve_param(info: ParamInfo, spec: ParamSpec, profile: RunProfile, source: str) -> Resolved:
    where = f"{source}: {info.section}.{info.field}"
    form = spec.form
    if info.key == "precision":
        return _resolve_precision(spec, profile, where)
    if form == "fixed":
        return Resolved(info.key, "fixed", value=spec.value)
    if form == "rule" and not info.rule.narrows:  # type: ignore[union-attr]
        value = {
            "gradient_checkpointing": lambda: _rules.gradient_checkpointing_for(profile.gpu_memory_gb),
            "eval_strategy": lambda: _rules.eval_strategy_for(profile.dataset_size),
        }.get(info.key, lambda: None)()
        return Resolved(info.key, "derived", value=value, note=info.rule.help)  # type: ignore[union-attr]
    if form == "choices":
        choices = spec.choices
        note = ""
        if spec.rule == "gpu-memory":
            choices, note = _fit_batch_choices(choices, profile)
        return _collapse(Resolved(info.key, "categorical", choices=tuple(choices), note=note))
    # a range, or a narrowing rule alone (the guide's band is then the range)
    kind = "int" if info.type is int else "float"
    band, basis = _guide_band(info.key, profile)
    if form == "rule":
        if band is None:  # the learning rate of a model the guide gives no band for
            band, basis = _rules.LEARNING_RATE_RANGE, "from conservative to aggressive, no model-size band"
        return Resolved(info.key, kind, low=band[0], high=band[1], log=kind == "float", note=f"guide band {basis}")
    plain = Resolved(info.key, kind, low=spec.low, high=spec.high, log=spec.log, step=spec.step)
    if spec.rule is None:
        return _collapse(plain)
    if band is None:
        return _collapse(dataclasses.replace(plain, note=f"the guide gives no band {basis}: the space's range"))
    return _intersect(info.key, kind, spec, band, basis)


def _guide_band(key: str, profile: RunProfile) -> tuple[tuple[Any, Any] | None, str]:
    """The guide's band for a ranged parameter on this profile (None: none), and what it is for."""
    if key == "learning_rate":
        size = profile.model_parameters
        return _rules.learning_rate_band(size), (f"for a {format_count(size)}-parameter model" if size else
                                                   "for a model of unknown size (run narrows it by the loaded model's; "
                                                   "--model-parameters shows that, e.g. 22.7M for the embedded MiniLM)")
    band = _rules.epochs_band if key == "num_train_epochs" else _rules.weight_decay_band
    return band(profile.dataset_size), f"for {profile.dataset_size:,} examples"


def _intersect(key: str, kind: str, spec: ParamSpec, band: tuple[Any, Any], basis: str) -> Resolved:
    low, high = max(spec.low, band[0]), min(spec.high, band[1])
    if spec.step and low <= high:
        low = spec.low + math.ceil((low - spec.low) / spec.step - 1e-9) * spec.step
        high = spec.low + math.floor((high - spec.low) / spec.step + 1e-9) * spec.step
    if low <= high:
        space, guide = f"space {_fmt(spec.low)}..{_fmt(spec.high)}", f"the guide's {_fmt(band[0])}..{_fmt(band[1])} {basis}"
        if band[0] <= spec.low and spec.high <= band[1]:
            note = f"{space}, inside {guide}"
        elif low == high:
            note = f"{space} meets {guide} at {_fmt(low)} alone"
        else:
            note = f"{space} narrowed to {guide}"
        return _collapse(Resolved(key, kind, low=low, high=high, log=spec.log, step=spec.step, note=note))
    # No overlap: the band is the guide's rule for this run's data or model, which the
    # space's range was written without knowing. Take the band's bound nearest the space.
    value = band[0] if spec.high < band[0] else band[1]
    note = (f"space {_fmt(spec.low)}..{_fmt(spec.high)} misses the guide's {_fmt(band[0])}..{_fmt(band[1])} {basis}: "
            f"the guide wins, nearest bound {_fmt(value)} taken")
    return Resolved(key, "fixed", value=value, note=note)


def _collapse(param: Resolved) -> Resolved:
    """A distribution with one possible value is that value, fixed (no trial parameter)."""
    if param.kind == "categorical" and len(param.choices) == 1:
        return dataclasses.replace(param, kind="fixed", value=param.choices[0], choices=())
    if param.kind in ("int", "float") and param.low == param.high:
        return dataclasses.replace(param, kind="fixed", value=param.low, low=None, high=None, log=False, step=None)
    return param


def _fit_batch_choices(choices: tuple[int, ...], profile: RunProfile) -> tuple[tuple[int, ...], str]:
    band = _rules.per_device_batch_band(profile.gpu_memory_gb)
    if band is None:
        return choices, "no GPU memory limit on CPU"
    floor, cap = band
    gpu = f"{profile.gpu_memory_gb:g} GB"
    fitting = tuple(c for c in choices if floor <= c <= cap)
    # under the guide's smallest row (4 GB: 2-4) the band is this project's, not the guide's
    whose = "the guide's" if profile.gpu_memory_gb >= _rules.SMALLEST_ROW_GB else f"under the guide's {_rules.SMALLEST_ROW_GB:g} GB row,"
    if fitting:
        return fitting, f"{whose} {floor}-{cap} per device on {gpu}"
    under = tuple(c for c in choices if c <= cap)
    if under:
        return under, (f"all space choices under {whose} {floor}-{cap} for {gpu}: the space wins "
                       "(a smaller batch fits, only slower, and the table assumes a small model)")
    # Every choice is over the cap: memory wins (out-of-memory fails the run outright).
    return (cap,), f"all space choices exceed the {cap} a {gpu} GPU holds: memory wins, {cap} taken"


def _resolve_precision(spec: ParamSpec, profile: RunProfile, where: str) -> Resolved:
    hardware = "this CPU" if profile.accelerator == "cpu" else ("this GPU (bf16 supported)" if profile.bf16_supported else "this GPU (no bf16)")

    def supported(precision: str) -> bool:
        return _rules.precision_supported(precision, profile.accelerator, profile.bf16_supported)

    if spec.form == "rule":
        value = _rules.precision_for(profile.accelerator, profile.bf16_supported)
        return Resolved("precision", "derived", value=value, note=BY_KEY["precision"].rule.help)  # type: ignore[union-attr]
    if spec.form == "fixed":
        if not supported(spec.value):
            raise SpaceError(f"{where}: {spec.value} cannot run on {hardware}; write precision: {{rule: hardware}}")
        return Resolved("precision", "fixed", value=spec.value)
    choices = tuple(c for c in spec.choices or () if supported(c))
    if not choices:
        raise SpaceError(f"{where}: none of {', '.join(spec.choices or ())} runs on {hardware}; write precision: {{rule: hardware}}")
    return _collapse(Resolved("precision", "categorical", choices=choices, note="choices this hardware runs"))


# --- the effective batch ------------------------------------------------------------------


def _batch_plan(
    space: SearchSpace, per_device: Resolved, accumulation: Resolved, profile: RunProfile
) -> tuple[Resolved, Resolved | None, Resolved]:
    """Per-device choices, the sampled effective batch (when accumulation is derived) and
    accumulation, such that every pairing lands in the band."""
    devices = profile.devices
    sizes = list(per_device.choices) if per_device.kind == "categorical" else [per_device.value]
    band = space.effective_batch
    notes = [per_device.note] if per_device.note else []

    if accumulation.kind != "derived":
        steps = accumulation.value
        if band is not None:
            low, high = band
            fitting = [p for p in sizes if low <= p * steps * devices <= high]
            if not fitting:
                # The band cannot be met with this accumulation: the memory-capped sizes win
                # and the one nearest the band is taken.
                fitting = [max(sizes)] if max(sizes) * steps * devices < low else [min(sizes)]
                notes.append(f"effective band {low}-{high} unreachable with accumulation {steps} x {devices} devices: {fitting[0]} taken")
            else:
                notes.append(f"{'/'.join(map(str, fitting))} x {steps} accumulation x {devices} device(s) within the band "
                             f"{low}-{high}, {_rules.effective_band_note(band)}")
            sizes = fitting
        return _batch_param(per_device, sizes, notes), None, accumulation

    low, high = band  # type: ignore[misc]  # checked on load: derived accumulation needs a band
    # Targets are the smallest per-device batch on every device, doubled: each larger
    # per-device batch that divides them all can pair with any target.
    unit = min(sizes) * devices
    doublings = [unit << k for k in range(64) if unit << k <= high]
    targets = [t for t in doublings if t >= low]
    if not targets:
        # The band holds no doubling of the smallest step: below it the devices' minimum
        # wins (no smaller step exists), else the largest doubling under the band's top.
        targets = [doublings[-1]] if doublings else [unit]
        notes.append(f"no {unit} x 2^k in the band {low}-{high} ({min(sizes)} per device x {devices} devices): {targets[0]} taken")
    fitting = [p for p in sizes if all(t % (p * devices) == 0 for t in targets)]
    left_out = sorted(set(sizes) - set(fitting))
    if left_out:
        notes.append(f"{'/'.join(map(str, left_out))} left out: times {devices} device(s) it does not divide the effective batch {targets[0]}")
    effective = _collapse(Resolved(
        EFFECTIVE_BATCH, "categorical", choices=tuple(targets),
        note=f"per-device x accumulation x devices: {unit} x powers of two in the band {low}-{high}, {_rules.effective_band_note(band)}",
    ))
    steps = sorted({t // (p * devices) for t in targets for p in fitting})
    accumulation = dataclasses.replace(
        accumulation, note=f"effective / (per-device x {devices} device(s)): {', '.join(map(str, steps))}"
    )
    return _batch_param(per_device, fitting, notes), effective, accumulation


def _batch_param(per_device: Resolved, sizes: list[int], notes: list[str]) -> Resolved:
    return _collapse(Resolved(PER_DEVICE, "categorical", choices=tuple(sizes), note="; ".join(n for n in notes if n)))
