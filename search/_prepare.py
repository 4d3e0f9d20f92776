"""Preparing a study for a run: found or created, checked, its baseline queued.

Everything a study needs to continue (space, workload, hardware profile, metric) is
stored on it as user attributes (``_study``), so a rerun resumes without re-typed
options and refuses options that would mix two different searches in one study. The
scenario's guide preset, fitted to the data, is enqueued as the first trial (user attrs
``baseline=True`` and the settings it trains, ``guide_config``), once per study, so every
study answers "how much better than the guide?".
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import SearchError, UsageError
from ._version import installed_version
from ._loop import SearchPlan
from ._samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER, PRUNERS
from ._study import (ATTR_CREATED, ATTR_DATA_DIGEST, ATTR_DIRECTION, ATTR_METRIC, ATTR_PROFILE, ATTR_PRUNER, ATTR_RUNG_RULES,
                     ATTR_SAMPLER, ATTR_SPACE, ATTR_SPACE_SOURCE, ATTR_SPACE_YAML, ATTR_TASK, ATTR_VERSION, ATTR_WORKLOAD, RUNG_RULES,
                     TRIAL_GUIDE_CONFIG, TRIAL_GUIDE_PARAMS, default_study_name, stored_search_space, study_names)

if TYPE_CHECKING:
    import optuna

    from ._engine import RunRequest
    from .objectives import LoraObjective
    from .spaces import ResolvedSpace, SearchSpace

# Workload fields that may differ between the runs of one study: they change speed,
# not the value a trial measures.
RESUMABLE_WORKLOAD_FIELDS = frozenset({"torch_threads"})
# the finished trials a study should hold where neither --trials nor the space file's study.trials says
DEFAULT_TRIALS = 30


@dataclass
class Prepared:
    """A study ready for its trials, with what this process loaded for it."""

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


def _resume_conflicts(study_name: str, stored: dict[str, Any], space_arg: str | None, space: SearchSpace | None,
                      given_workload: dict[str, Any]) -> None:
    """Refuse options that would mix a second, different search into a stored study."""
    from .objectives import Workload, option_name

    hint = f"drop the option to continue study {study_name!r}, or pass --study NEW-NAME to start another"
    if space is not None and space.name == stored[ATTR_SPACE] and stored.get(ATTR_SPACE_YAML) is not None \
            and space.yaml != stored[ATTR_SPACE_YAML]:
        raise SearchError(f"study {study_name!r} searches space {space.name} as its file read when the study began, and "
                          f"{space_arg!r} has changed since: drop --space to continue with the stored space, "
                          "or pass --study NEW-NAME to search the edited one")
    if space is not None and (space.name != stored[ATTR_SPACE] or space.yaml != stored.get(ATTR_SPACE_YAML)):
        was = stored[ATTR_SPACE] + (f" (file {stored.get(ATTR_SPACE_SOURCE)})" if stored.get(ATTR_SPACE_YAML) else "")
        raise SearchError(f"study {study_name!r} searches space {was}, not {space_arg!r}: {hint}")
    # a field stored studies predate ran at its default (e.g. rungs = 1)
    stored_workload = {**Workload().to_dict(), **stored[ATTR_WORKLOAD]}
    for name, value in given_workload.items():
        if name in RESUMABLE_WORKLOAD_FIELDS:
            continue
        if stored_workload[name] != value:
            raise SearchError(
                f"study {study_name!r} was run with {option_name(name)} {stored_workload[name]!r}, this run asks for {value!r}: {hint}"
            )


def prepare(request: RunRequest) -> Prepared:
    """Find or create the study, load model and data, enqueue the baseline once.

    Everything that can be wrong with the input is checked before the study is created
    or changed: a refused run leaves the storage as it was, and a storage file it had to
    create goes again.
    """
    import optuna

    from ._storage import file_to_create, open_storage, remove_if_unused
    from .objectives import metric_direction
    from .spaces import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress lines say what matters
    given = _given_workload(request)
    if "metric" in given:
        metric_direction(given["metric"])
    given_space = load_space(request.space) if request.space is not None else None
    new_file = file_to_create(request.storage)
    # the default studies/ folder is made for a new file: a refused run takes that away too
    new_folder = new_file.parent if new_file is not None and not new_file.parent.exists() else None
    storage = open_storage(request.storage)
    try:
        return _prepare_in(storage, request, given, given_space)
    except BaseException:
        if new_file is not None:
            remove_if_unused(storage, new_file)
        if new_folder is not None:
            with contextlib.suppress(OSError):  # not empty: another process's study is in it by now
                new_folder.rmdir()
        raise


# Seconds a process that lost the race to create a study waits for the winner to finish
# making it (its attributes, then the baseline): a second or two after the create.
CREATOR_WAIT_SECONDS = 60


def _wait_for_creator(storage: optuna.storages.BaseStorage, study_name: str) -> None:
    """Until the process that created ``study_name`` has queued its baseline, the last thing
    it does: joining before would find the study without its settings, or queue a second baseline."""
    import time

    study_id = storage.get_study_id_from_name(study_name)
    deadline = time.monotonic() + CREATOR_WAIT_SECONDS
    while not any(trial.user_attrs.get("baseline") for trial in storage.get_all_trials(study_id, deepcopy=False)):
        if time.monotonic() > deadline:
            raise SearchError(f"study {study_name!r} was created by another process, which has not finished making it "
                              f"in {CREATOR_WAIT_SECONDS} s: run the same command again")
        time.sleep(0.5)


def _prepare_in(storage: optuna.storages.BaseStorage, request: RunRequest, given: dict[str, Any],
                given_space: SearchSpace | None) -> Prepared:
    """``prepare`` on an open storage, from the workload options and space given."""
    import optuna

    from ._tracking import tracking_for
    from ._trials import baseline_trial, count_states, trial_outcome
    from .objectives import (LoraObjective, Workload, fit_base_to_gpu, metric_direction, quiet_libraries,
                             training_profile)
    from .spaces import RunProfile

    if request.study is not None:
        study_name = request.study
    elif given_space is None:
        raise UsageError("--space is required for a new study (e.g. --space memory-constrained); "
                         "to continue a study, pass --study NAME (see 'lora-search studies')")
    else:
        study_name = default_study_name(given_space.name, Workload.from_dict({**Workload().to_dict(), **given}))

    existing = study_name in study_names(storage)
    if existing:
        study = optuna.load_study(study_name=study_name, storage=storage)
        stored = study.user_attrs
        if ATTR_WORKLOAD not in stored:
            raise SearchError(f"study {study_name!r} was not made by lora-search: choose another --study name")
        _resume_conflicts(study_name, stored, request.space, given_space, given)
        if stored[ATTR_WORKLOAD].get("rungs", 1) > 1 and stored.get(ATTR_RUNG_RULES) != RUNG_RULES:
            raise SearchError(f"study {study_name!r} trained its rungs by an earlier lora-search's rules, so new results "
                              "would not compare with its own: start another with --study NEW-NAME")
        space = given_space or stored_search_space(stored)
        workload = Workload.from_dict({**stored[ATTR_WORKLOAD], **given})
        sampler = request.sampler or stored.get(ATTR_SAMPLER, DEFAULT_SAMPLER)
        pruner = request.pruner or stored.get(ATTR_PRUNER, DEFAULT_PRUNER)
    else:
        if given_space is None:
            raise UsageError(f"no study named {study_name!r} yet: pass --space to start it "
                             f"(studies there: {', '.join(study_names(storage)) or 'none'})")
        space = given_space
        # the scenario's rungs unless --rungs says otherwise; a resumed study keeps its own
        space_rungs = {} if space.study_defaults.rungs is None else {"rungs": space.study_defaults.rungs}
        workload = Workload.from_dict({**Workload().to_dict(), **space_rungs, **given})
        sampler = request.sampler or DEFAULT_SAMPLER
        pruner = request.pruner

    direction = metric_direction(workload.metric)
    pruner = pruner or space.study_defaults.pruner or DEFAULT_PRUNER
    if pruner not in PRUNERS:
        raise SearchError(f"space {space.name!r} names unknown pruner {pruner!r}: choose one of {', '.join(PRUNERS)}")
    timeout = request.timeout if request.timeout is not None else space.study_defaults.timeout_seconds

    quiet_libraries()
    if not existing:  # a resumed study keeps the base it was searched on
        workload, chosen = fit_base_to_gpu(workload)
        if chosen is not None:
            print(f"lora-search run: {chosen}", file=sys.stderr)
    tracking = tracking_for(request.report_to, request.storage)
    # loads model and data: bad input fails here, before any write; with workers, the base's
    # config alone (each worker loads the weights on its own device)
    objective = LoraObjective(workload, tracking, load_base=not request.uses_workers)
    if existing:
        profile = RunProfile(**study.user_attrs[ATTR_PROFILE])
        searched_on = study.user_attrs.get(ATTR_DATA_DIGEST)  # studies made before it was recorded have none
        if searched_on is not None and searched_on != objective.data.digest():
            raise SearchError(
                f"study {study_name!r} was searched on other rows than {objective.data.source!r} holds now (its training "
                f"or validation rows changed since; {objective.dataset_size:,} training rows now, "
                f"{profile.dataset_size:,} then): new trials would not compare with its own; restore the data, or pass "
                "--study NEW-NAME to search the data as it is")
    else:
        profile = training_profile(objective.dataset_size, objective.model_parameters, workload.quantization)
    objective.config_devices = profile.devices  # the configs' effective batch spans the profile's devices
    resolved = space.resolve(profile)
    baseline_params = resolved.params_for(resolved.baseline())

    if not existing:
        try:
            study = optuna.create_study(study_name=study_name, storage=storage, direction=direction)
        except optuna.exceptions.DuplicatedStudyError:
            # another process (another host, a second terminal) created it while this one loaded
            # the model and data: join it as a resume, with the checks a resume makes
            print(f"lora-search run: study {study_name!r} was created by another process meanwhile; joining it",
                  file=sys.stderr)
            _wait_for_creator(storage, study_name)
            return _prepare_in(storage, request, given, given_space)
        attrs = {
            ATTR_VERSION: installed_version(),
            ATTR_SPACE: space.name,
            ATTR_SPACE_SOURCE: "built-in" if space.yaml is None else str(Path(space.source).resolve()),
            ATTR_SPACE_YAML: space.yaml,
            ATTR_PROFILE: dataclasses.asdict(profile),
            ATTR_WORKLOAD: workload.to_dict(),
            ATTR_METRIC: workload.metric,
            ATTR_TASK: objective.task,
            ATTR_DIRECTION: direction,
            ATTR_CREATED: datetime.now(timezone.utc).isoformat(timespec="seconds"),
            ATTR_DATA_DIGEST: objective.data.digest(),
            ATTR_RUNG_RULES: RUNG_RULES if workload.rungs > 1 else None,
        }
        for key, value in attrs.items():
            if value is not None:
                study.set_user_attr(key, value)
    study.set_user_attr(ATTR_SAMPLER, sampler)
    study.set_user_attr(ATTR_PRUNER, pruner)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([workload.metric])  # optuna-dashboard's name for the value, not "Objective 0"

    trials = study.get_trials(deepcopy=False)
    base = baseline_trial(trials)
    if base is None or trial_outcome(base) == "failed":  # once per study; again only if it failed
        guide = resolved.guide()
        study.enqueue_trial(baseline_params, user_attrs={"baseline": True, "preset": space.baseline_preset,
                                                          TRIAL_GUIDE_CONFIG: guide.to_dict(),
                                                          TRIAL_GUIDE_PARAMS: resolved.values_of(guide)})
        trials = study.get_trials(deepcopy=False)

    plan = SearchPlan(
        study_name=study_name,
        storage=request.storage,
        space=space.name if space.yaml is None else space.source,
        space_yaml=space.yaml,
        profile=dataclasses.asdict(profile),
        workload=workload.to_dict(),
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        # offset by the study's length: a resumed run must not replay the first run's draws
        sampler_seed=workload.seed + len(trials),
        target=request.trials or space.study_defaults.trials or DEFAULT_TRIALS,
        deadline=time.time() + timeout if timeout is not None else None,
        tracking=dataclasses.asdict(tracking) if tracking is not None else None,
    )
    return Prepared(plan, study, objective, resolved, count_states(trials).finished)


__all__ = ["Prepared", "prepare"]
