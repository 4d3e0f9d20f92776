"""When a proxy trial evaluates, and the step numbers it reports to Optuna.

Pruners compare trials at equal ``step`` values: the median and percentile pruners
look up other trials' values at exactly the same step, successive halving and
Hyperband place rungs at step thresholds. HF's own Optuna integration reports
``global_step``, which means different amounts of data when batch size or gradient
accumulation differ between trials. Here the step is the number of training examples
seen, on a grid shared by every trial of a workload:

- a trial's target interval is train_sample x epochs / evaluations_per_trial examples;
- it is snapped to train_sample x 2^k (k a whole number, nearest in log scale), so
  every interval divides the larger ones: a 3-epoch and a 5-epoch trial both report
  at 1, 2 and 3 passes over the sample (interval = one pass), a 2-epoch trial also at
  half passes. A trial evaluates 0.7x to 1.4x evaluations_per_trial times;
- the evaluation happens after the first optimizer step at which the examples seen
  reach the grid point (at most one effective batch past it) and is reported at the
  grid point itself, so equal steps mean equal data across trials;
- the end of training is always evaluated; when it is off the grid (fractional
  epochs) it is reported at round(train_sample x epochs).

For successive halving and Hyperband, min_resource is best the first report step of
a typical trial (``report_steps(...)[0]``) and max_resource its last.

The data rungs of ``run --rungs`` (``rung_sizes``) are another fidelity axis: rung k
trains a config again on train_sample x RUNG_FACTOR^k examples, after the search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


# Each rung trains on this many times the examples (and validation rows) of the one before,
# and successive halving promotes the best 1/RUNG_FACTOR of a rung to it.
RUNG_FACTOR = 4


def rung_sizes(first: int, rungs: int, available: int) -> list[int]:
    """The training examples of each rung: first x RUNG_FACTOR^k, capped at the ``available``
    rows of the training split (a rung that would not add data is left out)."""
    sizes: list[int] = []
    for rung in range(rungs):
        size = min(first * RUNG_FACTOR**rung, available)
        if sizes and size <= sizes[-1]:
            break
        sizes.append(size)
    return sizes


@dataclass(frozen=True)
class ProxySchedule:
    train_examples: int
    epochs: float
    per_device_batch: int
    accumulation: int
    interval: float  # examples between evaluations: train_examples x 2^k

    @classmethod
    def plan(cls, train_examples: int, epochs: float, per_device_batch: int, accumulation: int, evaluations_per_trial: int) -> ProxySchedule:
        passes_per_evaluation = epochs / evaluations_per_trial
        exponent = round(math.log2(passes_per_evaluation))
        interval = max(1.0, train_examples * 2.0**exponent)
        return cls(train_examples, epochs, per_device_batch, accumulation, interval)

    @property
    def total_examples(self) -> int:
        return round(self.train_examples * self.epochs)

    @property
    def optimizer_steps(self) -> int:
        """Steps the Trainer plans: ceil(epochs x steps per epoch), as transformers computes it."""
        batches_per_epoch = math.ceil(self.train_examples / self.per_device_batch)
        steps_per_epoch = max(1, math.ceil(batches_per_epoch / self.accumulation))
        return math.ceil(self.epochs * steps_per_epoch)

    def grid_point(self, index: int) -> int:
        return round(index * self.interval)

    def report_steps(self) -> list[int]:
        """Every step this trial reports at, if it runs to the end."""
        steps = []
        index = 1
        while self.grid_point(index) <= self.total_examples:
            steps.append(self.grid_point(index))
            index += 1
        if not steps or steps[-1] < self.total_examples:
            steps.append(self.total_examples)
        return steps

    def last_grid_point_reached(self, examples_seen: int) -> int | None:
        """The largest grid point <= examples_seen (None before the first)."""
        index = math.floor(examples_seen / self.interval) + 1
        while index > 0 and self.grid_point(index) > examples_seen:
            index -= 1
        return self.grid_point(index) if index > 0 else None
