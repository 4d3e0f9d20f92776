"""Watching a search: a live progress bar on a terminal, one line per finished trial.

No progress library: on a terminal the bar is redrawn in place with a carriage return
(a background thread ticks the clock once a second while a trial trains); into a file
or a pipe only the per-trial lines are written, so logs stay readable.
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from ._study import trained_params
from ._trials import TrialCounts, count_states, describe_stop, trial_outcome

BAR_WIDTH = 24


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``; None -> ``?``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def format_params(params: dict[str, Any]) -> str:
    """Parameters as ``name=value`` pairs, floats kept short."""
    parts = []
    for name, value in params.items():
        if isinstance(value, float):
            text = f"{value:.3g}"
        else:
            text = str(value)
        parts.append(f"{name}={text}")
    return " ".join(parts)


@dataclass
class Progress:
    """An Optuna callback that reports each finished trial and keeps a bar up to date.

    ``target`` is the number of finished trials the study should reach; ``deadline``
    (a ``time.monotonic()`` instant) is when no new trial may start.
    """

    target: int
    metric: str
    direction: str
    deadline: float | None = None
    quiet: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    counts: TrialCounts = field(default_factory=TrialCounts)
    best: float | None = None
    started: float = field(default_factory=time.monotonic)
    trials_this_run: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ticker: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def live(self) -> bool:
        return not self.quiet and self.stream.isatty()

    def start(self, study: Any) -> None:
        """Counts what the study already holds (a resumed run) and starts the clock."""
        self.counts = count_states(study.get_trials(deepcopy=False))
        self.best = _best_value(study)
        self.started = time.monotonic()
        if self.live:
            self._ticker = threading.Thread(target=self._tick, name="lora-search-progress", daemon=True)
            self._ticker.start()
            self._draw()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.live:
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()

    def __call__(self, study: Any, trial: Any) -> None:
        """Optuna calls this after every trial of this process."""
        self.trials_this_run += 1
        counts = count_states(study.get_trials(deepcopy=False))
        best = _best_value(study)
        with self._lock:
            self.counts, self.best = counts, best
            if self.quiet:
                return
            if self.live:
                self.stream.write("\r\033[K")
            self.stream.write(self.trial_line(trial) + "\n")
            if self.live:
                self.stream.write(self._fitted_bar())
            self.stream.flush()

    def trial_line(self, trial: Any) -> str:
        outcome = trial_outcome(trial)
        tag = " (baseline)" if trial.user_attrs.get("baseline") else ""
        if outcome == "complete":
            result = f"{self.metric} {format_value(trial.value)}"
        elif outcome == "pruned":
            result = describe_stop(trial)  # "pruned at N examples"
        else:
            result = f"{outcome}: {describe_stop(trial)}"
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        line = (
            f"trial {trial.number}{tag}  {result}  [{format_duration(seconds)}]  "
            f"{self.counts.finished}/{self.target} finished, best {format_value(self.best)}  "
            f"{format_params(trained_params(trial))}"
        )
        warning = trial.user_attrs.get("first_rung_warning")
        return f"{line}\nwarning: {warning}" if warning else line

    def bar(self) -> str:
        done = min(self.counts.finished, self.target)
        filled = int(BAR_WIDTH * done / self.target) if self.target else BAR_WIDTH
        elapsed = time.monotonic() - self.started
        c = self.counts
        return (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{self.target}  "
            f"complete {c.complete} pruned {c.pruned} infeasible {c.infeasible} failed {c.failed}  "
            f"best {format_value(self.best)}  elapsed {format_duration(elapsed)}  "
            f"left ~{format_duration(self.remaining_seconds(elapsed))}"
        )

    def remaining_seconds(self, elapsed: float) -> float | None:
        """Mean time per trial of this run times the trials still to go, capped by the timeout."""
        to_go = max(0, self.target - self.counts.finished)
        if not to_go:
            return 0.0
        if not self.trials_this_run:
            return None  # no trial of this run has finished: nothing to estimate from
        estimate = elapsed / self.trials_this_run * to_go
        if self.deadline is not None:
            estimate = min(estimate, max(0.0, self.deadline - time.monotonic()))
        return estimate

    def _draw(self) -> None:
        with self._lock:
            self.stream.write("\r\033[K" + self._fitted_bar())
            self.stream.flush()

    def _fitted_bar(self) -> str:
        """The bar cut to the terminal's width: a wrapped line cannot be redrawn with \\r."""
        return self.bar()[: shutil.get_terminal_size().columns - 1]

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._draw()


class TrainingLine:
    """The live line of one training on a terminal (a config at a rung, or ``train``'s):
    its optimizer steps, the time left and its best value so far, redrawn at most once a
    second. A top-rung config or a full training runs minutes on a CPU and hours for a
    large model on a GPU, and its own lines come only at evaluations or its end. Off a
    terminal it writes nothing.

    Used with ``with``, which clears the line however the training ends; pass it as
    ``LoraObjective.train_at_rung``'s ``on_progress`` or ``train_with_preset``'s ``live``
    where ``live``.
    """

    def __init__(self, label: str, metric: str, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.label = label
        self.metric = metric
        self.stream = stream if stream is not None else sys.stderr
        self.live = not quiet and self.stream.isatty()
        self.started = time.monotonic()
        self._drawn: float | None = None

    def __enter__(self) -> TrainingLine:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.clear()

    def clear(self) -> None:
        """Erase the line (before another line is printed); the next call draws it again."""
        if self.live and self._drawn is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = None

    def __call__(self, done: int, total: int, best: float | None) -> None:
        now = time.monotonic()
        if not self.live or (self._drawn is not None and now - self._drawn < 1.0 and done < total):
            return
        self._drawn = now
        elapsed = now - self.started
        left = elapsed / done * (total - done) if done else None
        filled = int(BAR_WIDTH * done / total) if total else BAR_WIDTH
        line = (f"{self.label}  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] step {done}/{total}  "
                f"best {self.metric} {format_value(best)}  elapsed {format_duration(elapsed)}  left ~{format_duration(left)}")
        self.stream.write("\r\033[K" + line[: shutil.get_terminal_size().columns - 1])
        self.stream.flush()


def _best_value(study: Any) -> float | None:
    try:
        return study.best_value
    except ValueError:  # no complete feasible trial yet
        return None
