"""Successive halving over the data rungs of ``run --rungs``.

Optuna's successive halving decides a trial's promotion the moment it finishes a rung,
against the values that rung holds so far. While a rung holds fewer than
``reduction_factor`` values it promotes a trial that is merely the best so far, so the
first trials of a study (the guide's baseline, then the sampler's first random draws)
climb on evidence of one or two comparisons. Each rung after the first costs
RUNG_FACTOR times the one before, so these early climbs decide much of a search's
compute, and they fill the top rung, where the winner is chosen, with configs that
were never measured against a real pool (benchmarks/README.md, section 7, variant 2:
3 to 5 trials at the top rung instead of 1 or 2).

Here a trial leaves the first rung only when that rung already holds a full pool
(``reduction_factor`` values, its own included), so it is promoted only from the best
1/reduction_factor of real competitors. The first few trials stop at the first rung
whatever their value. Higher rungs keep Optuna's rule: a trial reaches them only after
passing that test, and the baseline, which always climbs, is the first value there,
so a promotion above the first rung means beating the guide preset at least.
"""

from __future__ import annotations

import optuna

# Where optuna's successive halving keeps a trial's value at rung 0 (a trial system attr;
# the same name since optuna 1.x). A trial holding it has finished the first rung.
FIRST_RUNG_KEY = "completed_rung_0"


class DataRungPruner(optuna.pruners.SuccessiveHalvingPruner):
    """Successive halving whose first rung promotes only against a full pool."""

    def __init__(self, first_rung: int, reduction_factor: int) -> None:
        super().__init__(min_resource=first_rung, reduction_factor=reduction_factor)
        self._first_rung = first_rung

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if super().prune(study, trial):
            return True
        if trial.last_step != self._first_rung:  # not the first rung's report, or a higher rung
            return False
        others = sum(1 for other in study.get_trials(deepcopy=False)
                     if other.number != trial.number and FIRST_RUNG_KEY in other.system_attrs)
        return others + 1 < self._reduction_factor


__all__ = ["DataRungPruner"]
