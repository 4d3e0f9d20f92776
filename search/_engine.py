"""The search engine: one Optuna study per scenario, model and data.

``run_search(request)`` is what ``lora-search run`` and the Python API call:

1. the study is found or created in the storage; everything needed to continue it
   (space, workload, hardware profile, metric) is stored on the study as user
   attributes, so a rerun resumes without re-typed options and refuses options that
   would mix two different searches in one study;
2. the scenario's guide preset is enqueued as the first trial (user attr
   ``baseline=True``), once per study, so every study answers "how much better than
   the guide?";
3. trials run until the study holds ``trials`` finished ones (complete, pruned or
   infeasible) or the timeout passes; a rerun with a larger target adds the difference.

``run_trials(plan)`` is the per-process loop: the same function serves the main
process and any extra worker process, which needs only the picklable ``SearchPlan``.
"""

from __future__ import annotations

import dataclasses
import gc
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ._errors import SearchError

if TYPE_CHECKING:
    import optuna

    from .objectives import LoraObjective, Workload
    from .spaces import ResolvedSpace, SearchSpace, TrainingConfig

SAMPLERS = ("tpe", "random", "gp", "cmaes", "qmc")
PRUNERS = ("successive-halving", "median", "percentile", "hyperband", "patient", "wilcoxon", "threshold", "none")
DEFAULT_PRUNER = "successive-halving"
DEFAULT_SAMPLER = "tpe"

# Study user attributes written by lora-search (visible in optuna-dashboard).
ATTR_PREFIX = "lora_search."
ATTR_VERSION = ATTR_PREFIX + "version"
ATTR_SPACE = ATTR_PREFIX + "space"
ATTR_SPACE_SOURCE = ATTR_PREFIX + "space_source"  # "built-in" or the file path it was read from
ATTR_SPACE_YAML = ATTR_PREFIX + "space_yaml"  # the file's text, for spaces read from a file
ATTR_PROFILE = ATTR_PREFIX + "profile"
ATTR_WORKLOAD = ATTR_PREFIX + "workload"
ATTR_METRIC = ATTR_PREFIX + "metric"
ATTR_TASK = ATTR_PREFIX + "task"  # the task the objective trained (inferred when not given)
ATTR_DIRECTION = ATTR_PREFIX + "direction"
ATTR_SAMPLER = ATTR_PREFIX + "sampler"
ATTR_PRUNER = ATTR_PREFIX + "pruner"
ATTR_CREATED = ATTR_PREFIX + "created"

# Workload fields that may differ between the runs of one study: they change speed,
# not the value a trial measures.
RESUMABLE_WORKLOAD_FIELDS = frozenset({"torch_threads"})

# Trials that crash (not pruned, not infeasible) are recorded as failed and the search
# goes on; this many failures in a row mean something is broken, so the run stops.
MAX_CONSECUTIVE_FAILURES = 3
# A trial that raises is recorded as failed (the objective records the error as the
# trial's user attr "error" and leaves the process clean for the next trial); the
# MAX_CONSECUTIVE_FAILURES guard stops a search in which every trial breaks.
TRIAL_FAILURES: tuple[type[BaseException], ...] = (Exception,)


@dataclass
class RunRequest:
    """What ``lora-search run`` asks for. None means 'not given': a new study takes the
    default, a resumed study takes what it stored."""

    space: str | None = None
    trials: int = 30
    timeout: float | None = None  # seconds; None: the scenario's default
    study: str | None = None  # None: derived from space, model and data
    storage: str | None = None  # None: $LORA_SEARCH_STORAGE or studies/lora-search.db
    sampler: str | None = None
    pruner: str | None = None
    # Workload options given explicitly: a dict of Workload fields, or a whole Workload
    # (then every field counts as given).
    workload: Workload | dict[str, Any] | None = None
    quiet: bool = False
    workers: int = 1
    devices: str | None = None  # GPUs for the workers, e.g. "0,1,3" (default: all)

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise SearchError(f"--trials must be a whole number >= 1, got {self.trials!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise SearchError(f"--timeout must be positive, got {self.timeout!r} seconds")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise SearchError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise SearchError(f"unknown pruner {self.pruner!r}: choose one of {', '.join(PRUNERS)}")
        if self.study is not None and not self.study.strip():
            raise SearchError("--study must not be empty")


@dataclass(frozen=True)
class SearchPlan:
    """Everything one process needs to run trials of a prepared study (picklable)."""

    study_name: str
    storage: str | None
    space_path: str  # a built-in name or a YAML file
    profile: dict[str, Any]
    workload: dict[str, Any]
    direction: str  # "minimize" | "maximize"
    sampler: str
    pruner: str
    sampler_seed: int
    target: int
    deadline: float | None  # time.time() after which no trial starts


@dataclass
class RunSummary:
    """The outcome of a run, for printing and for notebooks."""

    study_name: str
    storage: str | None
    metric: str
    direction: str
    target: int
    counts: Any  # _trials.TrialCounts
    stopped_because: str  # "target", "timeout", "interrupted", "failures", "already done"
    elapsed_seconds: float
    best: dict[str, Any] | None  # number, value, params
    baseline: dict[str, Any] | None  # number, value, outcome
    importances: dict[str, float] | None
    importance_note: str
    commands: dict[str, str] = field(default_factory=dict)

    def as_text(self) -> str:
        from ._progress import format_duration, format_params, format_value
        from ._trials import improvement

        lines = [
            f"study {self.study_name!r}: {self.counts.as_text()} "
            f"({self.counts.finished}/{self.target} finished; stopped: {self.stopped_because}; "
            f"{format_duration(self.elapsed_seconds)} this run)",
        ]
        if self.baseline is not None:
            shown = format_value(self.baseline["value"]) if self.baseline["value"] is not None else self.baseline["outcome"]
            lines.append(f"baseline (guide preset, trial {self.baseline['number']}): {self.metric} {shown}")
        if self.best is None:
            lines.append("best: no complete feasible trial yet")
        else:
            line = f"best: trial {self.best['number']}, {self.metric} {format_value(self.best['value'])}"
            if self.baseline is not None and self.baseline["value"] is not None:
                gain = improvement(self.best["value"], self.baseline["value"], self.direction)
                line += f" ({gain} vs the baseline, {self.direction})"
            lines.append(line)
            lines.append(f"  params: {format_params(self.best['params'])}")
        if self.importances:
            ranked = ", ".join(f"{name} {share:.2f}" for name, share in self.importances.items())
            lines.append(f"parameter importances: {ranked}")
        else:
            lines.append(f"parameter importances: {self.importance_note}")
        for what, command in self.commands.items():
            lines.append(f"{what}: {command}")
        return "\n".join(lines)


# --- samplers and pruners ---------------------------------------------------------


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler: the same seed and history give the same parameters."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # multivariate TPE models the parameters jointly (batch size x learning rate).
            return optuna.samplers.TPESampler(seed=seed, multivariate=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        if name == "cmaes":
            _require("cmaes", "--sampler cmaes")
            # CMA-ES handles numbers; the categorical choices go to a seeded random sampler.
            return optuna.samplers.CmaEsSampler(
                seed=seed, independent_sampler=optuna.samplers.RandomSampler(seed=seed), warn_independent_sampling=False
            )
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise SearchError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def _require(package: str, what: str) -> None:
    from importlib.util import find_spec

    if find_spec(package) is None:
        raise SearchError(f"{what} needs the {package} package: pip install {package}")


def make_pruner(name: str, direction: str, min_resource: int = 1) -> optuna.pruners.BasePruner:
    """A pruner comparing trials at equal evaluation steps.

    The objective reports after every evaluation; two trials (the baseline and one more)
    are enough to start comparing, since a study here holds tens of trials, not hundreds.
    ``min_resource`` is the first step a trial reports at (steps count training examples,
    so 128 rather than 1): Hyperband and successive halving place their first rung there.
    """
    import warnings

    import optuna

    with warnings.catch_warnings():  # PatientPruner and WilcoxonPruner are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _pruner(name, direction, min_resource)


def _pruner(name: str, direction: str, min_resource: int) -> optuna.pruners.BasePruner:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0, n_min_trials=2)
    if name == "percentile":
        # stricter than the median: keep only trials in the best quarter
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=0, n_min_trials=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource="auto", reduction_factor=3)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=3)
    if name == "patient":
        # the median rule, but a trial gets two bad evaluations in a row before it goes
        return optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0, n_min_trials=2), patience=2
        )
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    if name == "threshold":
        # prunes only diverged trials: a NaN metric, or an infinite loss
        infinity = float("inf")
        return optuna.pruners.ThresholdPruner(upper=infinity) if direction == "minimize" else optuna.pruners.ThresholdPruner(lower=-infinity)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SearchError(f"unknown pruner {name!r}: choose one of {', '.join(PRUNERS)}")


# --- study names and stored attributes ----------------------------------------------


def _short_name(value: str | None, default: str) -> str:
    if not value:
        return default
    text = value.rstrip("/\\")
    text = re.split(r"[/\\]", text)[-1]
    text = re.sub(r"\.(csv|tsv|json|jsonl|parquet|txt)$", "", text, flags=re.IGNORECASE)
    text = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower()
    return text or default


def default_study_name(space_name: str, workload: Workload) -> str:
    """``memory-constrained.minilm.fine-food``: scenario, model and data at a glance."""
    return f"{space_name}.{_short_name(workload.model, 'minilm')}.{_short_name(workload.data, 'fine-food')}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lora-search")
    except PackageNotFoundError:
        return "unknown"


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def unknown_study_error(name: str, storage: optuna.storages.BaseStorage, storage_spec: str | None) -> SearchError:
    from ._storage import storage_label

    known = study_names(storage)
    listing = ", ".join(known) if known else "none yet; start one with 'lora-search run'"
    return SearchError(f"no study named {name!r} in {storage_label(storage_spec)} (studies there: {listing})")


def load_lora_study(name: str, storage_spec: str | None) -> optuna.Study:
    """An existing study made by lora-search; SearchError naming the known ones otherwise."""
    import optuna

    from ._storage import open_storage

    storage = open_storage(storage_spec, create=False)
    if name not in study_names(storage):
        raise unknown_study_error(name, storage, storage_spec)
    study = optuna.load_study(study_name=name, storage=storage)
    if ATTR_WORKLOAD not in study.user_attrs:
        raise SearchError(f"study {name!r} was not made by lora-search (it has no {ATTR_WORKLOAD} attribute)")
    return study


def study_metric(study: optuna.Study) -> tuple[str, str]:
    return study.user_attrs.get(ATTR_METRIC, "value"), study.user_attrs.get(ATTR_DIRECTION, "minimize")


def stored_space(study: optuna.Study) -> ResolvedSpace:
    """The study's space resolved for its stored hardware profile, as its trials saw it."""
    from .spaces import RunProfile, load_space

    path = _materialize_stored_space(study.study_name, study.user_attrs)
    return load_space(path).resolve(RunProfile(**study.user_attrs[ATTR_PROFILE]))


def trial_config(resolved: ResolvedSpace, trial: optuna.trial.FrozenTrial) -> TrainingConfig:
    """The exact training settings a finished trial ran with (its params through the space)."""
    import optuna

    return resolved.sample(optuna.trial.FixedTrial(dict(trial.params), number=trial.number))


def _quiet_libraries() -> None:
    """Keep model loading from writing between the progress lines: transformers' loading
    bars and its load report (the new classifier head is expected to be untrained)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


# --- preparing a study ----------------------------------------------------------------


@dataclass
class _Prepared:
    plan: SearchPlan
    study: optuna.Study
    objective: LoraObjective
    resolved: ResolvedSpace
    already_finished: int


def _given_workload(request: RunRequest) -> dict[str, Any]:
    """The workload options given, local model and data paths made absolute: the study
    stores them, and a resume, export or train may run from another folder."""
    from .objectives import Workload

    if request.workload is None:
        return {}
    given = request.workload.to_dict() if isinstance(request.workload, Workload) else dict(request.workload)
    for name in ("model", "data"):
        value = given.get(name)
        if value and Path(value).expanduser().exists():
            given[name] = str(Path(value).expanduser().resolve())
    return given


def _space_file_text(space_arg: str) -> str | None:
    """The YAML text when ``space_arg`` is a file (not a built-in scenario name)."""
    from .spaces import scenario_names

    if space_arg in scenario_names():
        return None
    try:
        return Path(space_arg).read_text(encoding="utf-8")
    except OSError:
        return None  # load_space reports the missing file with the known names


def _materialize_stored_space(study_name: str, stored: dict[str, Any]) -> str:
    """A path load_space can read for a stored space (the built-in name, or a copy of the file)."""
    text = stored.get(ATTR_SPACE_YAML)
    if text is None:
        return stored[ATTR_SPACE]
    source = stored.get(ATTR_SPACE_SOURCE)
    if source and Path(source).is_file() and Path(source).read_text(encoding="utf-8") == text:
        return source
    folder = Path(tempfile.gettempdir()) / "lora-search-spaces"
    folder.mkdir(exist_ok=True)
    copy = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', study_name)}.yaml"
    copy.write_text(text, encoding="utf-8")
    return str(copy)


def _resume_conflicts(study_name: str, stored: dict[str, Any], space_arg: str | None, space_name: str | None,
                      given_workload: dict[str, Any]) -> None:
    """Refuse options that would mix a second, different search into a stored study."""
    from ._options import WORKLOAD_OPTIONS

    hint = f"drop the option to continue study {study_name!r}, or pass --study NEW-NAME to start another"
    if space_arg is not None:
        file_text = _space_file_text(space_arg)
        if space_name != stored[ATTR_SPACE] or file_text != stored.get(ATTR_SPACE_YAML):
            was = stored[ATTR_SPACE] + (f" (file {stored.get(ATTR_SPACE_SOURCE)})" if stored.get(ATTR_SPACE_YAML) else "")
            raise SearchError(f"study {study_name!r} searches space {was}, not {space_arg!r}: {hint}")
    stored_workload = stored[ATTR_WORKLOAD]
    for name, value in given_workload.items():
        if name in RESUMABLE_WORKLOAD_FIELDS or name not in stored_workload:
            continue
        if stored_workload[name] != value:
            option = next((flag for flag, field_name, _, _ in WORKLOAD_OPTIONS if field_name == name), name)
            raise SearchError(
                f"study {study_name!r} was run with {option} {stored_workload[name]!r}, this run asks for {value!r}: {hint}"
            )


def prepare(request: RunRequest) -> _Prepared:
    """Find or create the study, load model and data, enqueue the baseline once.

    Everything that can be wrong with the input is checked before the study is created
    or changed: a refused run leaves the storage as it was.
    """
    import optuna

    from ._storage import open_storage
    from ._trials import baseline_trial, count_states, trial_outcome
    from .objectives import LoraObjective, Workload, metric_direction
    from .objectives import detect_hardware
    from .spaces import RunProfile, load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress lines say what matters
    given = _given_workload(request)
    if "metric" in given:
        metric_direction(given["metric"])
    space_name = load_space(request.space).name if request.space is not None else None
    storage = open_storage(request.storage)

    if request.study is not None:
        study_name = request.study
    elif request.space is None:
        raise SearchError("--space is required for a new study (e.g. --space memory-constrained); "
                          "to continue a study, pass --study NAME (see 'lora-search studies')")
    else:
        study_name = default_study_name(space_name, Workload.from_dict({**Workload().to_dict(), **given}))

    existing = study_name in study_names(storage)
    if existing:
        study = optuna.load_study(study_name=study_name, storage=storage)
        stored = study.user_attrs
        if ATTR_WORKLOAD not in stored:
            raise SearchError(f"study {study_name!r} was not made by lora-search: choose another --study name")
        _resume_conflicts(study_name, stored, request.space, space_name, given)
        space_path = _materialize_stored_space(study_name, stored)
        workload = Workload.from_dict({**stored[ATTR_WORKLOAD], **given})
        sampler = request.sampler or stored.get(ATTR_SAMPLER, DEFAULT_SAMPLER)
        pruner = request.pruner or stored.get(ATTR_PRUNER, DEFAULT_PRUNER)
    else:
        if request.space is None:
            raise SearchError(f"no study named {study_name!r} yet: pass --space to start it "
                              f"(studies there: {', '.join(study_names(storage)) or 'none'})")
        space_path = request.space
        workload = Workload.from_dict({**Workload().to_dict(), **given})
        sampler = request.sampler or DEFAULT_SAMPLER
        pruner = request.pruner

    space: SearchSpace = load_space(space_path)
    direction = metric_direction(workload.metric)
    pruner = pruner or space.study_defaults.pruner or DEFAULT_PRUNER
    if pruner not in PRUNERS:
        raise SearchError(f"space {space.name!r} names unknown pruner {pruner!r}: choose one of {', '.join(PRUNERS)}")
    timeout = request.timeout if request.timeout is not None else space.study_defaults.timeout_seconds

    _quiet_libraries()
    objective = LoraObjective(workload)  # loads model and data: bad input fails here, before any write
    if existing:
        profile = RunProfile(**study.user_attrs[ATTR_PROFILE])
    else:
        profile = RunProfile(dataset_size=objective.dataset_size, **detect_hardware())
    resolved = space.resolve(profile)
    baseline = resolved.baseline()
    baseline_params = resolved.params_for(baseline)

    if not existing:
        study = optuna.create_study(study_name=study_name, storage=storage, direction=direction)
        attrs = {
            ATTR_VERSION: _version(),
            ATTR_SPACE: space.name,
            ATTR_SPACE_SOURCE: "built-in" if _space_file_text(request.space) is None else str(Path(request.space).resolve()),
            ATTR_SPACE_YAML: _space_file_text(request.space),
            ATTR_PROFILE: dataclasses.asdict(profile),
            ATTR_WORKLOAD: workload.to_dict(),
            ATTR_METRIC: workload.metric,
            ATTR_TASK: objective.task,
            ATTR_DIRECTION: direction,
            ATTR_CREATED: datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        for key, value in attrs.items():
            if value is not None:
                study.set_user_attr(key, value)
    study.set_user_attr(ATTR_SAMPLER, sampler)
    study.set_user_attr(ATTR_PRUNER, pruner)

    trials = study.get_trials(deepcopy=False)
    base = baseline_trial(trials)
    if base is None or trial_outcome(base) == "failed":  # once per study; again only if it failed
        study.enqueue_trial(baseline_params, user_attrs={"baseline": True, "preset": space.baseline_preset})
        trials = study.get_trials(deepcopy=False)

    plan = SearchPlan(
        study_name=study_name,
        storage=request.storage,
        space_path=space_path,
        profile=dataclasses.asdict(profile),
        workload=workload.to_dict(),
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        # offset by the study's length: a resumed run must not replay the first run's draws
        sampler_seed=workload.seed + len(trials),
        target=request.trials,
        deadline=time.time() + timeout if timeout is not None else None,
    )
    return _Prepared(plan, study, objective, resolved, count_states(trials).finished)


# --- the per-process trial loop -------------------------------------------------------


@dataclass
class _Stopper:
    """An Optuna callback stopping the loop at the target, the deadline or repeated failures."""

    target: int
    deadline: float | None
    consecutive_failures: int = 0
    reason: str = "target"
    last_failure: str = ""

    def should_stop(self, study: optuna.Study) -> bool:
        from ._workers import wait_for_room

        # trials running in other processes will finish too: do not start one too many,
        # but wait while one of them may still fail and leave room (see _workers)
        counts = wait_for_room(study, self.target, self.deadline)
        if counts.finished >= self.target:
            self.reason = "target"
            return True
        if counts.finished + counts.running >= self.target:  # waited until the deadline
            self.reason = "timeout"
            return True
        if self.deadline is not None and time.time() >= self.deadline:
            self.reason = "timeout"
            return True
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self.reason = "failures"
            return True
        return False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.FAIL:
            self.consecutive_failures += 1
            self.last_failure = str(trial.user_attrs.get("error") or trial.system_attrs.get("fail_reason", ""))
        else:
            self.consecutive_failures = 0
        if self.should_stop(study):
            study.stop()


def open_plan_study(plan: SearchPlan, min_resource: int = 1) -> optuna.Study:
    import optuna

    from ._storage import open_storage

    return optuna.load_study(
        study_name=plan.study_name,
        storage=open_storage(plan.storage),
        sampler=make_sampler(plan.sampler, plan.sampler_seed),
        pruner=make_pruner(plan.pruner, plan.direction, min_resource),
    )


def run_trials(
    plan: SearchPlan,
    *,
    objective: LoraObjective | None = None,
    resolved: ResolvedSpace | None = None,
    callbacks: list[Callable[..., None]] | None = None,
) -> str:
    """Run trials of the plan's study in this process until it is done; returns why it stopped.

    ``objective`` and ``resolved`` are reused when the caller already has them (the main
    process); a worker process builds its own from the plan.
    """
    import warnings

    import optuna

    from .objectives import LoraObjective, Workload
    from .spaces import RunProfile, load_space

    if objective is None:
        _quiet_libraries()
        objective = LoraObjective(Workload.from_dict(plan.workload))
    if resolved is None:
        resolved = load_space(plan.space_path).resolve(RunProfile(**plan.profile))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_plan_study(plan, min_resource=objective.report_steps(resolved.baseline())[0])
    # trials of a process that died are failed here (storages with heartbeats), so
    # they neither count as running nor block the target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    stopper = _Stopper(plan.target, plan.deadline)
    if stopper.should_stop(study):
        return stopper.reason

    from ._workers import begin_trial, mark_interrupted

    def one_trial(trial: optuna.Trial) -> float:
        try:
            begin_trial(study, trial, plan.target, plan.deadline,
                        default_device="cuda:0" if plan.profile.get("accelerator") == "cuda" else "cpu")
            return objective(trial, resolved.sample(trial))
        except KeyboardInterrupt:
            mark_interrupted(study, trial)
            raise

    # The model, tokenizer and data live as long as the process: freezing them keeps every
    # trial's full collections (the objective's, accelerate's) from walking them again
    # (0.4-0.5 s per collection before, 0.012 s after: benchmarks/README.md, overhead).
    gc.collect()
    gc.freeze()
    try:
        study.optimize(one_trial, catch=TRIAL_FAILURES, callbacks=[*(callbacks or []), stopper])
    except KeyboardInterrupt:
        return "interrupted"
    if stopper.reason == "failures":
        raise SearchError(
            f"{MAX_CONSECUTIVE_FAILURES} trials in a row failed (last: {stopper.last_failure or 'no reason recorded'}); "
            f"see 'lora-search show {plan.study_name}'"
        )
    return stopper.reason


# --- the whole run ------------------------------------------------------------------


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """Parameter importances over the complete trials, or None and why not."""
    import warnings

    import optuna

    from ._trials import trial_outcome

    complete = [t for t in study.get_trials(deepcopy=False) if trial_outcome(t) == "complete"]
    if len(complete) < 3:
        return None, f"need at least 3 complete feasible trials, have {len(complete)}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError) as error:
        return None, f"not computable yet ({error})"
    if not result:
        return None, "no parameter varied between the complete trials"
    return {name: float(value) for name, value in result.items()}, ""


def summarize(study: optuna.Study, *, storage: str | None, target: int, stopped_because: str,
              elapsed_seconds: float) -> RunSummary:
    from ._trials import baseline_trial, count_states, ranked_trials, trial_outcome

    metric, direction = study_metric(study)
    trials = study.get_trials(deepcopy=False)
    ranked = ranked_trials(trials, direction)
    best = ranked[0] if ranked else None
    base = baseline_trial(trials)
    shares, note = importances(study)
    storage_option = f" --storage {storage}" if storage else ""
    commands = {
        "dashboard": f"lora-search dashboard{storage_option}",
        "export": f"lora-search export {study.study_name}{storage_option} --name NAME",
    }
    return RunSummary(
        study_name=study.study_name,
        storage=storage,
        metric=metric,
        direction=direction,
        target=target,
        counts=count_states(trials),
        stopped_because=stopped_because,
        elapsed_seconds=elapsed_seconds,
        best=None if best is None else {"number": best.number, "value": best.value, "params": dict(best.params)},
        baseline=None if base is None else {
            "number": base.number,
            "value": base.value if trial_outcome(base) == "complete" else None,
            "outcome": trial_outcome(base),
        },
        importances=shares,
        importance_note=note,
        commands=commands,
    )


def run_search(request: RunRequest | None = None, /, **options: Any) -> RunSummary:
    """Run (or resume) a search; ``run_search(space="memory-constrained", trials=30)``
    is the same as ``run_search(RunRequest(space="memory-constrained", trials=30))``."""
    import sys

    from ._progress import Progress

    if request is None:
        request = RunRequest(**options)
    elif options:
        raise TypeError("pass either a RunRequest or keyword options, not both")
    started = time.monotonic()
    slots = None
    if request.workers != 1 or request.devices is not None:
        from ._workers import local_slots

        slots = local_slots(request.workers, request.devices)  # checked before the study is touched
    prepared = prepare(request)
    plan, study = prepared.plan, prepared.study
    metric, direction = study_metric(study)
    progress = Progress(
        target=plan.target,
        metric=metric,
        direction=direction,
        deadline=None if plan.deadline is None else time.monotonic() + (plan.deadline - time.time()),
        quiet=request.quiet,
    )
    if prepared.already_finished >= plan.target:
        stopped = "already done"
    else:
        if not request.quiet:
            print(f"study {plan.study_name!r}: {prepared.already_finished} finished, target {plan.target} "
                  f"(sampler {plan.sampler}, pruner {plan.pruner})", file=sys.stderr)
        progress.start(study)
        try:
            if slots is None:
                stopped = run_trials(plan, objective=prepared.objective, resolved=prepared.resolved, callbacks=[progress])
            else:
                from ._workers import run_worker_processes

                stopped = run_worker_processes(plan, slots, on_trial=progress)
        finally:
            progress.close()
    return summarize(study, storage=request.storage, target=plan.target, stopped_because=stopped,
                     elapsed_seconds=time.monotonic() - started)


__all__ = ["RunRequest", "RunSummary", "SearchPlan", "run_search", "run_trials"]
