"""The Trainer callback that turns one brief training run into an Optuna trial."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from ._schedule import ProxySchedule


class NonFiniteLossError(ArithmeticError):
    """The training loss or an evaluation metric became NaN or infinite."""


class TrainingWatch:
    """A forward hook on the trained model: counts training examples, stops on a non-finite loss.

    Counting the batches the model actually sees is exact whatever the batch size,
    accumulation or last partial batch of an epoch. Evaluation forwards run in eval
    mode and are not counted.
    """

    def __init__(self) -> None:
        self.examples = 0
        self._handle: Any = None

    def attach(self, model: Any) -> None:
        self._handle = model.register_forward_hook(self._after_forward, with_kwargs=True)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _after_forward(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if not module.training:
            return
        inputs = kwargs.get("input_ids")
        if inputs is None:
            inputs = kwargs.get("inputs_embeds", args[0] if args else None)
        self.examples += int(inputs.shape[0])
        loss = output.get("loss") if hasattr(output, "get") else None
        if loss is not None and not bool(loss.detach().isfinite().all()):
            raise NonFiniteLossError(f"training loss became {loss.item()} after {self.examples} examples")


class ProxyTrialCallback(TrainerCallback):
    """Evaluates on the shared example grid, reports to the trial, prunes, stops early.

    The trial's value is its best evaluation. With ``report=False`` (a rung of a
    multi-fidelity trial) evaluations are neither reported nor pruned on: the trial
    reports once per rung, at the rung's size. Early stopping keeps transformers'
    EarlyStoppingCallback semantics (an evaluation improves only when it beats the best
    so far by more than the threshold; stop after ``patience`` evaluations without
    improvement) without the checkpoints that callback requires.
    """

    def __init__(
        self,
        trial: Any,
        schedule: ProxySchedule,
        watch: TrainingWatch,
        read_value: Callable[[dict[str, float]], float],
        maximize: bool,
        patience: int,
        threshold: float,
        report: bool = True,
        on_progress: Callable[[int, int, float | None], None] | None = None,
    ) -> None:
        self.trial = trial
        # the baseline is what every trial is measured against: it trains to its end even
        # where a re-run of it (after an interrupt) comes late, among better trials
        self.prunable = not getattr(trial, "user_attrs", {}).get("baseline", False)
        self.schedule = schedule
        self.watch = watch
        self.read_value = read_value
        self.maximize = maximize
        self.patience = patience
        self.threshold = threshold
        self.report = report
        # after each optimizer step: steps done, steps planned, best value so far (a rung's live line)
        self.on_progress = on_progress
        self.evaluations: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.eval_seconds = 0.0
        self.pruned = False
        self.early_stopped = False
        self._pending_step: int | None = None
        self._last_reported = 0
        self._last_evaluated_global_step = -1
        self._without_improvement = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        reached = self.schedule.last_grid_point_reached(self.watch.examples)
        if reached is not None and reached > self._last_reported:
            self._pending_step = reached
        elif state.global_step >= state.max_steps and self._last_evaluated_global_step < state.global_step:
            self._pending_step = max(self.schedule.total_examples, self._last_reported + 1)
        if self._pending_step is not None:
            control.should_evaluate = True
        if self.on_progress is not None:
            self.on_progress(state.global_step, state.max_steps, self.best_value)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self._pending_step is None or metrics is None:
            return
        step, self._pending_step = self._pending_step, None
        self._last_reported = step
        self._last_evaluated_global_step = state.global_step
        self.eval_seconds += float(metrics.get("eval_runtime", 0.0))
        value = self.read_value(metrics)
        if not math.isfinite(value):
            raise NonFiniteLossError(f"evaluation gave {value} after {self.watch.examples} examples")
        self.evaluations.append(
            {
                "step": step,
                "examples_seen": self.watch.examples,
                "optimizer_step": state.global_step,
                "value": value,
                **{k: round(float(v), 6) for k, v in metrics.items() if k in ("eval_loss", "eval_accuracy", "eval_f1")},
            }
        )
        better = lambda a, b: a > b if self.maximize else a < b  # noqa: E731
        if self.best_value is None or better(value, self.best_value):
            improved_enough = self.best_value is None or abs(value - self.best_value) > self.threshold
            self.best_value, self.best_step = value, step
        else:
            improved_enough = False
        self._without_improvement = 0 if improved_enough else self._without_improvement + 1
        if self.report:
            self.trial.report(value, step)
        if self.report and self.prunable and self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True
        elif self.patience and self._without_improvement >= self.patience:
            self.early_stopped = True
            control.should_training_stop = True
