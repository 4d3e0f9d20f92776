"""Reading trials the way lora-search talks about them.

Optuna knows COMPLETE, PRUNED, FAIL, RUNNING and WAITING. A complete trial whose
constraints are violated (the objective calls ``trial.set_constraint``, e.g. when
a configuration ran out of memory) is *infeasible*: it finished, but it cannot win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from optuna.trial import FrozenTrial, TrialState


@dataclass
class TrialCounts:
    complete: int = 0
    pruned: int = 0
    infeasible: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        """The trials a search counts towards its target: complete, pruned or infeasible."""
        return self.complete + self.pruned + self.infeasible

    def as_text(self) -> str:
        text = f"{self.complete} complete, {self.pruned} pruned, {self.infeasible} infeasible, {self.failed} failed"
        if self.running:
            text += f", {self.running} running"
        if self.waiting:
            text += f", {self.waiting} waiting"
        return text


def is_infeasible(trial: FrozenTrial) -> bool:
    return any(value > 0 for value in trial.constraints.values())


def trial_outcome(trial: FrozenTrial) -> str:
    """complete, pruned, infeasible, failed, running or waiting."""
    if trial.state == TrialState.COMPLETE:
        return "infeasible" if is_infeasible(trial) else "complete"
    return {
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }[trial.state]


def count_states(trials: Iterable[FrozenTrial]) -> TrialCounts:
    counts = TrialCounts()
    for trial in trials:
        outcome = trial_outcome(trial)
        setattr(counts, outcome, getattr(counts, outcome) + 1)
    return counts


def describe_stop(trial: FrozenTrial) -> str:
    """Why a trial ended the way it did, in a few words (from the objective's user attrs)."""
    reason = trial.user_attrs.get("stop_reason")
    outcome = trial_outcome(trial)
    if outcome == "pruned":
        steps = sorted(trial.intermediate_values)
        return f"pruned at {steps[-1]:,} examples" if steps else "pruned"
    if outcome == "infeasible":
        violated = ", ".join(name for name, value in trial.constraints.items() if value > 0)
        return str(trial.user_attrs.get("infeasible_reason") or reason or f"violates {violated}")
    if outcome == "failed":
        return str(trial.user_attrs.get("error") or trial.system_attrs.get("fail_reason") or "failed")
    return str(reason) if reason else outcome


def standing_value(trial: FrozenTrial, rungs: list[dict[str, Any]]) -> dict[str, Any]:
    """The value a complete trial stands on and how it was measured ('fidelity', text to append
    to the value): in a study with rungs (``_rungs.rung_record``), its value at the highest rung
    it trained at; else its proxy value."""
    from ._rungs import highest_entry, rung_text

    entry = highest_entry(trial, rungs) if rungs else None
    if entry is None:
        return {"value": trial.value, "fidelity": ""}
    return {"value": entry["value"], "fidelity": rung_text(entry)}


def examples_seen(trial: FrozenTrial) -> int | None:
    """Training examples the trial consumed, when the objective recorded it."""
    value = trial.user_attrs.get("examples_seen")
    return int(value) if value is not None else None


def baseline_trial(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The study's guide-preset trial (enqueued with user attr baseline=True).

    A baseline that failed (an interrupted run) is queued again with the same attrs,
    so the finished one is preferred, then one still to run, then the last failure.
    """
    candidates = [t for t in trials if t.user_attrs.get("baseline")]
    for wanted in (("complete", "infeasible", "pruned"), ("running", "waiting"), ("failed",)):
        matching = [t for t in candidates if trial_outcome(t) in wanted]
        if matching:
            return matching[0] if wanted[0] != "failed" else matching[-1]
    return None


def ranked_trials(trials: Iterable[FrozenTrial], direction: str, rungs: list[dict[str, Any]] | None = None) -> list[FrozenTrial]:
    """Complete feasible trials, best first. In a study with rungs (``_rungs.rung_record``) the
    trials at the highest rung come first, by their values there, then those of the rung below,
    down to the proxy's values: that is successive halving's final choice."""
    from ._rungs import highest_entry

    scored = [t for t in trials if trial_outcome(t) == "complete" and t.value is not None]
    sign = -1 if direction == "maximize" else 1
    if not rungs:
        return sorted(scored, key=lambda t: sign * t.value)
    entries = {t.number: highest_entry(t, rungs) for t in scored}  # a complete trial stands at rung 0 at least
    return sorted(scored, key=lambda t: (-entries[t.number]["rung"], sign * entries[t.number]["value"]))


def improvement(best: float, baseline: float, direction: str) -> str:
    """How much better ``best`` is than ``baseline``, as text with the sign of 'better'."""
    gain = baseline - best if direction == "minimize" else best - baseline
    if baseline:
        return f"{gain:+.4g} ({gain / abs(baseline):+.2%})"
    return f"{gain:+.4g}"


def plain(value: Any) -> Any:
    """Trial values as YAML/JSON-safe Python data."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
