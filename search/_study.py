"""A lora-search study read back: its stored settings, metric, space, trials' configs.

Everything needed to continue a study (space, workload, hardware profile, metric) is
stored on it as user attributes named ``lora_search.*`` (visible in optuna-dashboard),
so ``show``, ``export``, ``report`` and a resumed ``run`` need only its name.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

from ._errors import SearchError

if TYPE_CHECKING:
    import optuna

    from .objectives import Workload
    from .spaces import ResolvedSpace, SearchSpace, TrainingConfig

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
ATTR_DATA_DIGEST = ATTR_PREFIX + "data_digest"  # PreparedData.digest() of the rows the study searched on
ATTR_RUNG_RESULTS = ATTR_PREFIX + "rung_results"  # with --rungs: each rung's fidelity and results (_rungs)
# With --rungs: the rules the study's rungs follow. 5: successive halving over whole rungs
# after the search (_rungs), each config trained as its full run (re-derived), evaluated at
# that run's cadence (up to 4 per epoch) with its patience spanning as much of an epoch.
# 4: the same with the full run's patience counted in the rung's sparser evaluations.
# 3: the same on the trial's settings and the proxy's 3-4 evaluations.
# Before, the trials climbed rungs themselves, promoted as each finished one (2: each rung
# with its own validation rows; none: one sample for all).
ATTR_RUNG_RULES = ATTR_PREFIX + "rung_rules"
RUNG_RULES = 5
# on the baseline trial: the guide preset fitted to the data, the settings it trains (trained_config),
# and their values under the searched parameters' names (what trial lines show: trained_params)
TRIAL_GUIDE_CONFIG = "guide_config"
TRIAL_GUIDE_PARAMS = "guide_params"


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


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def load_lora_study(name: str, storage_spec: str | None) -> optuna.Study:
    """An existing study made by lora-search; SearchError naming the known ones otherwise."""
    import optuna

    from ._storage import open_storage, storage_label

    storage = open_storage(storage_spec, create=False)
    known = study_names(storage)
    if name not in known:
        listing = ", ".join(known) if known else "none yet; start one with 'lora-search run'"
        raise SearchError(f"no study named {name!r} in {storage_label(storage_spec)} (studies there: {listing})")
    study = optuna.load_study(study_name=name, storage=storage)
    if ATTR_WORKLOAD not in study.user_attrs:
        raise SearchError(f"study {name!r} was not made by lora-search (it has no {ATTR_WORKLOAD} attribute)")
    return study


def study_metric(study: optuna.Study) -> tuple[str, str]:
    """The metric a study's trials score and its direction ("minimize" or "maximize")."""
    return study.user_attrs.get(ATTR_METRIC, "value"), study.user_attrs.get(ATTR_DIRECTION, "minimize")


def stored_search_space(attrs: dict[str, Any]) -> SearchSpace:
    """The space a study stored: a built-in by name, a file's space from the text it stored
    (so the study outlives the file, and a changed file cannot change it)."""
    from .spaces import load_space

    text = attrs.get(ATTR_SPACE_YAML)
    if text is None:
        return load_space(attrs[ATTR_SPACE])
    return load_space(attrs.get(ATTR_SPACE_SOURCE) or attrs[ATTR_SPACE], text)


def stored_space(study: optuna.Study) -> ResolvedSpace:
    """The study's space resolved for its stored hardware profile, as its trials saw it."""
    from .spaces import RunProfile

    return stored_search_space(study.user_attrs).resolve(RunProfile(**study.user_attrs[ATTR_PROFILE]))


def trial_config(resolved: ResolvedSpace, trial: optuna.trial.FrozenTrial) -> TrainingConfig:
    """The exact training settings a finished trial ran with."""
    import optuna

    return trained_config(trial, resolved.sample(optuna.trial.FixedTrial(dict(trial.params), number=trial.number)))


def full_run_config(resolved: ResolvedSpace, trial: optuna.trial.FrozenTrial) -> tuple[TrainingConfig, dict[str, str]]:
    """A finished trial's settings re-derived for the full run (``rederive_for_dataset``):
    what ``export`` writes and every rung above the proxy trains, and why each changed."""
    from .spaces import rederive_for_dataset

    return rederive_for_dataset(trial_config(resolved, trial), resolved.profile)


def trained_config(trial: optuna.Trial | optuna.trial.FrozenTrial, drawn: TrainingConfig) -> TrainingConfig:
    """What ``trial`` trains with: ``drawn``, its params through the space, except for a
    baseline trial queued with the guide preset fitted to the data (``ResolvedSpace.guide``,
    user attr ``guide_config``): that preset as it is, inside the space or not. The trial's
    params stay the nearest point of the space, where the sampler learns the guide's value.
    Baselines queued before 2026-11-29 carry no such attr and trained their params."""
    from .spaces import TrainingConfig

    guide = trial.user_attrs.get(TRIAL_GUIDE_CONFIG)
    return drawn if guide is None else TrainingConfig.from_dict(guide)


def trained_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The searched parameters' values ``trial`` trained with: its params, or the guide
    preset's for a baseline that trained it (``trained_config``)."""
    return trial.user_attrs.get(TRIAL_GUIDE_PARAMS, trial.params)


def study_rungs(study: optuna.Study) -> list[int]:
    """The training examples of each rung of the study (one: a single-fidelity study)."""
    from .objectives import rung_sizes

    workload = study.user_attrs[ATTR_WORKLOAD]
    return rung_sizes(workload["train_sample"], workload.get("rungs", 1), study.user_attrs[ATTR_PROFILE]["dataset_size"])


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """Parameter importances over the complete trials, or None and why not."""
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


__all__ = ["ATTR_CREATED", "ATTR_DIRECTION", "ATTR_METRIC", "ATTR_PROFILE", "ATTR_PRUNER", "ATTR_SAMPLER", "ATTR_SPACE",
           "ATTR_RUNG_RESULTS", "ATTR_RUNG_RULES", "ATTR_SPACE_SOURCE", "ATTR_SPACE_YAML", "ATTR_TASK", "ATTR_VERSION", "ATTR_WORKLOAD", "RUNG_RULES", "default_study_name",
           "importances", "load_lora_study", "stored_search_space", "stored_space", "study_metric",
           "study_names", "study_rungs", "trial_config"]
