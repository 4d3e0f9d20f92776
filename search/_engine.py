"""The search: one Optuna study per scenario, model and data.

``run_search(request)``, what ``lora-search run`` and the Python API call, prepares the
study (``_prepare``), runs trials (``_loop``, here or in ``--workers N`` processes) until
it holds ``trials`` finished ones (complete, pruned or infeasible) or the timeout passes
(a rerun with a larger target adds the difference), and summarizes it, on the terminal
and as the study's note in optuna-dashboard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import SearchError
from ._prepare import prepare
from ._samplers import PRUNERS, SAMPLERS

if TYPE_CHECKING:
    import optuna

    from ._trials import TrialCounts
    from .objectives import Workload


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
    # Experiment trackers every trial reports to (not stored: a resumed run takes this run's).
    report_to: tuple[str, ...] = ()
    # The best complete trials trained again at a higher fidelity once the target is reached,
    # the winner chosen among them (_finalists); None: what the study stored (0 for a new one).
    finalists: int | None = None

    def __post_init__(self) -> None:
        from ._tracking import check_report_to

        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise SearchError(f"--trials must be a whole number >= 1, got {self.trials!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise SearchError(f"--timeout must be positive, got {self.timeout!r} seconds")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise SearchError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise SearchError(f"unknown pruner {self.pruner!r}: choose one of {', '.join(PRUNERS)}")
        if self.finalists is not None and (isinstance(self.finalists, bool) or not isinstance(self.finalists, int)
                                           or self.finalists < 0):
            raise SearchError(f"--finalists must be a whole number >= 0, got {self.finalists!r}")
        if self.study is not None and not self.study.strip():
            raise SearchError("--study must not be empty")
        check_report_to(self.report_to)  # before the study is created or changed


@dataclass
class RunSummary:
    """The outcome of a run, for printing and for notebooks."""

    study_name: str
    storage: str | None
    metric: str
    direction: str
    target: int
    counts: TrialCounts
    stopped_because: str  # "target", "timeout", "interrupted", "failures", "already done"
    elapsed_seconds: float
    best: dict[str, Any] | None  # number, value, params
    baseline: dict[str, Any] | None  # number, value, outcome
    importances: dict[str, float] | None
    importance_note: str
    commands: dict[str, str] = field(default_factory=dict)
    # the finalists' choice; with rungs, the compute spent against training every trial at
    # the top rung and what a search up to the whole training split would cost; a first
    # rung without signal
    notes: list[str] = field(default_factory=list)

    def as_text(self) -> str:
        from ._progress import format_duration

        lines = [
            f"study {self.study_name!r}: {self.counts.as_text()} "
            f"({self.counts.finished}/{self.target} finished; stopped: {self.stopped_because}; "
            f"{format_duration(self.elapsed_seconds)} this run)",
            *self._outcome_lines(),
            *self.notes,
        ]
        if self.importances:
            ranked = ", ".join(f"{name} {share:.2f}" for name, share in self.importances.items())
            lines.append(f"parameter importances: {ranked}")
        else:
            lines.append(f"parameter importances: {self.importance_note}")
        for what, command in self.commands.items():
            lines.append(f"{what}: {command}")
        return "\n".join(lines)

    def as_note(self, scenario: str) -> str:
        """The study's note in optuna-dashboard (Markdown): what the last run left."""
        outcome = "\n".join(f"- {line.strip()}" for line in [*self._outcome_lines(), *self.notes])
        return (f"**lora-search** scenario `{scenario}`, {self.metric} ({self.direction})\n\n{outcome}\n"
                f"- trials: {self.counts.as_text()}\n\nRewritten at the end of each `lora-search run` of this study.\n")

    def _outcome_lines(self) -> list[str]:
        """The baseline, and the best trial with its gain over the baseline."""
        from ._progress import format_params, format_value
        from ._trials import improvement

        lines = []
        if self.baseline is not None:
            shown = format_value(self.baseline["value"]) if self.baseline["value"] is not None else self.baseline["outcome"]
            number, fidelity = self.baseline["number"], self.baseline["fidelity"]
            lines.append(f"baseline (guide preset, trial {number}): {self.metric} {shown}{fidelity}")
        if self.best is None:
            lines.append("best: no complete feasible trial yet")
        else:
            line = f"best: trial {self.best['number']}, {self.metric} {format_value(self.best['value'])}{self.best['fidelity']}"
            # compared only where both values were measured the same way
            if self.baseline is not None and self.baseline["value"] is not None and self.baseline["fidelity"] == self.best["fidelity"]:
                gain = improvement(self.best["value"], self.baseline["value"], self.direction)
                line += f" ({gain} vs the baseline, {self.direction})"
            lines.append(line)
            lines.append(f"  params: {format_params(self.best['params'])}")
        return lines


def summarize(study: optuna.Study, *, storage: str | None, target: int, stopped_because: str,
              elapsed_seconds: float) -> RunSummary:
    from ._finalists import finalist_notes
    from ._study import ATTR_FINALISTS, ATTR_PROFILE, importances, study_metric, study_rungs
    from ._trials import baseline_trial, count_states, ranked_trials, standing_value, trial_outcome

    metric, direction = study_metric(study)
    trials = study.get_trials(deepcopy=False)
    finalists = study.user_attrs.get(ATTR_FINALISTS)
    ranked = ranked_trials(trials, direction, finalists)
    best = ranked[0] if ranked else None
    base = baseline_trial(trials)
    shares, note = importances(study)
    first_rung = base.user_attrs.get("first_rung_warning") if base is not None else None
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
        best=None if best is None else {
            "number": best.number, **standing_value(best, finalists), "params": dict(best.params),
        },
        baseline=None if base is None else {
            "number": base.number,
            **(standing_value(base, finalists) if trial_outcome(base) == "complete" else {"value": None, "fidelity": ""}),
            "outcome": trial_outcome(base),
        },
        importances=shares,
        importance_note=note,
        commands=commands,
        notes=[
            *finalist_notes(trials, direction, finalists),
            *_compute_notes(trials, study_rungs(study), study.user_attrs[ATTR_PROFILE]["dataset_size"]),
            *([f"warning: {first_rung}"] if first_rung else []),
        ],
    )


def _compute_notes(trials: list[optuna.trial.FrozenTrial], rungs: list[int], dataset_size: int) -> list[str]:
    """With rungs: the training examples the search spent against training every trial at the top
    rung, and about what a search with rungs up to the whole training split would spend."""
    import math

    from ._progress import format_duration
    from ._study import rung_compute
    from .objectives import RUNG_FACTOR, rung_sizes

    climbed = [t for t in trials if t.user_attrs.get("rung_values")]
    if len(rungs) < 2 or not climbed:
        return []
    spent, at_top = rung_compute(climbed, rungs)
    last_rungs = [t.user_attrs["rung_values"][-1] for t in climbed]
    saved = 1 - spent / at_top
    notes = [f"compute: {spent:,} training examples in {len(climbed)} trial(s); all of them at the top rung "
             f"({rungs[-1]:,} examples) would train ~{at_top:,.0f}: "
             + (f"{saved:.0%} saved" if saved >= 0 else f"the rungs cost {-saved:.0%} more")]
    full = rung_sizes(rungs[0], math.ceil(math.log(dataset_size / rungs[0], RUNG_FACTOR)) + 1, dataset_size)
    if full[-1] > rungs[-1]:
        passes = sum(last["examples_seen"] for last in last_rungs) / sum(last["examples"] for last in last_rungs)
        # as many trials at each rung as here; above the top, successive halving's
        # 1/RUNG_FACTOR of the rung below, and at least one (the baseline)
        reached = [sum(len(t.user_attrs["rung_values"]) > rung for t in climbed) for rung in range(len(rungs))]
        while len(reached) < len(full):
            reached.append(max(reached[-1] / RUNG_FACTOR, 1))
        examples = sum(count * passes * size for count, size in zip(reached, full))
        seconds_per_example = sum(t.duration.total_seconds() for t in climbed if t.duration is not None) / max(spent, 1)
        notes.append(f"a search up to the whole training split ({full[-1]:,} examples, --rungs {len(full)}) would train "
                     f"~{examples:,.0f} examples: ~{format_duration(examples * seconds_per_example)} at this run's speed")
    return notes


def run_search(request: RunRequest | None = None, /, **options: Any) -> RunSummary:
    """Run (or resume) a search; ``run_search(space="memory-constrained", trials=30)``
    is the same as ``run_search(RunRequest(space="memory-constrained", trials=30))``."""
    import sys

    from ._finalists import run_finalists
    from ._loop import run_plan
    from ._progress import Progress
    from ._study import ATTR_FINALISTS, study_metric
    from ._tracking import log_summary, open_group
    from ._trials import count_states

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
    plan, study, tracking = prepared.plan, prepared.study, prepared.objective.tracking
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
        if tracking is not None:
            open_group(tracking, plan.study_name, quiet=request.quiet)
        progress.start(study)
        try:
            if slots is None:
                stopped = run_plan(plan, objective=prepared.objective, resolved=prepared.resolved, callbacks=[progress])
            else:
                from ._workers import run_worker_processes

                stopped = run_worker_processes(plan, slots, on_trial=progress)
        finally:
            progress.close()
    if stopped in ("target", "already done") and (prepared.finalists or ATTR_FINALISTS in study.user_attrs):
        try:
            run_finalists(study, prepared.objective, prepared.resolved, prepared.finalists, quiet=request.quiet)
        except KeyboardInterrupt:
            stopped = "interrupted"
    elif stopped == "timeout" and prepared.finalists:  # a deadline bounds the run: no finalist starts after it
        print(f"finalists: not trained, the search stopped at its timeout with {count_states(study.get_trials()).finished} "
              f"of {plan.target} trials; they train when a run reaches the target (e.g. the same command with a longer "
              "--timeout)", file=sys.stderr)
    summary = summarize(study, storage=request.storage, target=plan.target, stopped_because=stopped,
                        elapsed_seconds=time.monotonic() - started)
    _save_note(study, summary)
    if tracking is not None and stopped != "already done":
        log_summary(tracking, summary)
    return summary


def _save_note(study: optuna.Study, summary: RunSummary) -> None:
    """Write the summary as the study's optuna-dashboard note. The trials are stored by
    now: a note that cannot be written (storage gone, read-only, a dashboard version
    without notes) costs a warning, never the run."""
    import sys

    from .spaces import first_line
    from ._study import ATTR_SPACE

    try:
        import optuna_dashboard

        optuna_dashboard.save_note(study, summary.as_note(study.user_attrs[ATTR_SPACE]))
    except Exception as error:
        print(f"warning: the study's dashboard note was not written: {first_line(error)}", file=sys.stderr)


__all__ = ["RunRequest", "RunSummary", "run_search", "summarize"]
