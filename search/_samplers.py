"""The samplers and pruners a search can use, by the names ``lora-search run`` takes."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ._errors import SearchError
from .spaces import PRUNERS  # a space file names them too

if TYPE_CHECKING:
    import optuna

SAMPLERS = ("tpe", "random", "gp", "cmaes", "qmc")
DEFAULT_SAMPLER = "tpe"
DEFAULT_PRUNER = "successive-halving"


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler: the same seed and history give the same parameters."""
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
    Successive halving keeps the best third of each rung. (The data rungs of ``--rungs``
    are successive halving of their own, after the search: ``_rungs``.)
    """
    import optuna

    with warnings.catch_warnings():  # PatientPruner and WilcoxonPruner are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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
            if direction == "minimize":
                return optuna.pruners.ThresholdPruner(upper=infinity)
            return optuna.pruners.ThresholdPruner(lower=-infinity)
        if name == "none":
            return optuna.pruners.NopPruner()
    raise SearchError(f"unknown pruner {name!r}: choose one of {', '.join(PRUNERS)}")


__all__ = ["DEFAULT_PRUNER", "DEFAULT_SAMPLER", "PRUNERS", "SAMPLERS", "make_pruner", "make_sampler"]
