"""The search: one Optuna study per scenario, model and data.

``run_search(request)``, what ``lora-search run`` and the Python API call, prepares the
study (``_prepare``), runs trials (``_loop``, here or in ``--workers N`` processes) until
it holds ``trials`` finished ones (complete, pruned or infeasible) or the timeout passes
(a rerun with a larger target adds the difference), trains the rungs (``_rungs``, on the
same workers), and summarizes it, on the terminal and as the study's note in
optuna-dashboard.
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
    trials: int | None = None  # None: the scenario's (its space file's study.trials), else 30
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

    def __post_init__(self) -> None:
        from ._tracking import check_report_to

        if self.trials is not None and (isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1):
            raise SearchError(f"--trials must be a whole number >= 1, got {self.trials!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise SearchError(f"--timeout must be positive, got {self.timeout!r} seconds")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise SearchError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise SearchError(f"unknown pruner {self.pruner!r}: choose one of {', '.join(PRUNERS)}")
        if self.study is not None and not self.study.strip():
            raise SearchError("--study must not be empty")
        check_report_to(self.report_to)  # before the study is created or changed

    @property
    def uses_workers(self) -> bool:
        """Trials and rungs train in worker processes (``--workers`` or ``--devices`` given), not here."""
        return self.workers != 1 or self.devices is not None


@dataclass
class RunSummary:
    """The outcome of a run, for printing and for notebooks."""

    study_name: str
    storage: str | None
    metric: str
    direction: str
    target: int
    counts: TrialCounts
    stopped_because: str  # "target", "timeout", "interrupted", "rung failed", "already done"
    elapsed_seconds: float
    best: dict[str, Any] | None  # number, value, params
    baseline: dict[str, Any] | None  # number, value, outcome
    importances: dict[str, float] | None
    importance_note: str
    commands: dict[str, str] = field(default_factory=dict)
    # with rungs, what each rung trained, the compute spent against training every trial at
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
            if self.baseline is not None and self.baseline["number"] == self.best["number"]:
                line += " (the baseline: the search found nothing better than the guide preset)"
            # compared only where both values were measured the same way
            elif self.baseline is not None and self.baseline["value"] is not None and self.baseline["fidelity"] == self.best["fidelity"]:
                gain = improvement(self.best["value"], self.baseline["value"], self.direction)
                line += f" ({gain} vs the baseline, {self.direction})"
            lines.append(line)
            lines.append(f"  params: {format_params(self.best['params'])}")
        return lines


def summarize(study: optuna.Study, *, storage: str | None, target: int, stopped_because: str,
              elapsed_seconds: float) -> RunSummary:
    from ._rungs import rung_notes, rung_record
    from ._study import ATTR_PROFILE, ATTR_RUNG_RULES, RUNG_RULES, importances, study_metric, study_rungs, trained_params
    from ._trials import baseline_trial, count_states, ranked_trials, standing_value, trial_outcome

    metric, direction = study_metric(study)
    trials = study.get_trials(deepcopy=False)
    rungs = rung_record(study.user_attrs)
    sizes = study_rungs(study)
    ranked = ranked_trials(trials, direction, rungs)
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
            "number": best.number, **standing_value(best, rungs), "params": dict(trained_params(best)),
        },
        baseline=None if base is None else {
            "number": base.number,
            **(standing_value(base, rungs) if trial_outcome(base) == "complete" else {"value": None, "fidelity": ""}),
            "outcome": trial_outcome(base),
        },
        importances=shares,
        importance_note=note,
        commands=commands,
        notes=[
            # a study whose trials climbed rungs themselves (older rules) has its values in its trials
            *(rung_notes(trials, direction, rungs, sizes, study.user_attrs[ATTR_PROFILE]["dataset_size"])
              if len(sizes) == 1 or study.user_attrs.get(ATTR_RUNG_RULES) == RUNG_RULES else []),
            *([f"warning: {first_rung}"] if first_rung else []),
        ],
    )


def run_search(request: RunRequest | None = None, /, **options: Any) -> RunSummary:
    """Run (or resume) a search; ``run_search(space="memory-constrained", trials=30)``
    is the same as ``run_search(RunRequest(space="memory-constrained", trials=30))``."""
    import sys

    from ._loop import run_plan
    from ._progress import Progress
    from ._rungs import run_rungs
    from ._study import study_metric
    from ._tracking import log_summary, open_group
    from ._trials import count_states

    if request is None:
        request = RunRequest(**options)
    elif options:
        raise TypeError("pass either a RunRequest or keyword options, not both")
    started = time.monotonic()
    slots = None
    if request.uses_workers:
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
    gpus = prepared.objective.parallel
    if slots is None and gpus > 1 and not request.quiet:  # the Trainer's nn.DataParallel: one trial on every GPU
        print(f"lora-search run: each trial spreads its batches over the {gpus} visible GPUs; --workers {gpus} "
              f"trains {gpus} trials at once, one per GPU, which suits brief trainings better", file=sys.stderr)
    if prepared.already_finished >= plan.target:
        stopped = "already done"
    else:
        if not request.quiet:
            print(f"study {plan.study_name!r}: {prepared.already_finished} finished, target {plan.target} "
                  f"(sampler {plan.sampler}, pruner {plan.pruner})", file=sys.stderr)
            for note in (prepared.objective.data.blank_rows_note(), prepared.objective.length_note(), _rungs_cut_note(prepared)):
                if note is not None:
                    print(note, file=sys.stderr)
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
    rungs = len(prepared.objective.rung_examples) > 1
    if stopped in ("target", "already done") and rungs:
        try:
            if slots is None:
                rungs_stopped = run_rungs(study, prepared.objective, prepared.resolved, quiet=request.quiet,
                                          deadline=plan.deadline)
            else:  # on the workers' devices, as many configs at once as there are workers
                from ._rung_workers import RungWorkers

                with RungWorkers(plan, slots) as workers:
                    rungs_stopped = run_rungs(study, prepared.objective, prepared.resolved, quiet=request.quiet,
                                              workers=workers, deadline=plan.deadline)
            stopped = rungs_stopped or stopped
        except KeyboardInterrupt:
            stopped = "interrupted"
    elif stopped == "timeout" and rungs:  # a deadline bounds the run: no rung starts after it
        print(f"rungs: not trained, the search stopped at its timeout with {count_states(study.get_trials()).finished} "
              f"of {plan.target} trials; they train when a run reaches the target (e.g. the same command with a longer "
              "--timeout)", file=sys.stderr)
    summary = summarize(study, storage=request.storage, target=plan.target, stopped_because=stopped,
                        elapsed_seconds=time.monotonic() - started)
    _save_note(study, summary)
    if tracking is not None and stopped != "already done":
        log_summary(tracking, summary)
    return summary


def _rungs_cut_note(prepared: Any) -> str | None:
    """A line when the training split leaves room for fewer rungs than the study asks for."""
    objective = prepared.objective
    asked, sizes = objective.workload.rungs, objective.rung_examples
    if len(sizes) >= asked:
        return None
    return (f"note: --rungs {asked} asked, but the {objective.dataset_size:,} training rows leave room for {len(sizes)} "
            f"({', '.join(f'{size:,}' for size in sizes)} examples): a rung must train on more rows than the one below")


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
