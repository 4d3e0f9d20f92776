"""Successive halving over data rungs, after the search (``run --rungs K``).

The search's trials are rung 0: each trains on the proxy's sample and is scored on its
validation rows, pruned per evaluation as without rungs. Once the study holds its
target, rung 1 trains again the best quarter of rung 0, each a fresh adapter on
RUNG_FACTOR times the proxy's training examples for its epochs, scored on RUNG_FACTOR
times its validation rows, unpruned; rung 2 the best quarter of rung 1, and so on up to
rung K-1 (sizes capped at the splits), which trains the best config of the rung below
alone when it is rung 2 or higher. The guide's baseline trains again at the top rung
only: it climbs whatever its value, so its value at a rung between decides nothing (at
16 trials and 3 rungs that was half a full training). The winner is the best trial at
the highest rung.

A rung trains each config as its full run would (``full_run_config``: what ``export``
writes, with patience of at least an epoch) and evaluates it as often per epoch as that
run, up to 4 times, with its patience spanning as much of an epoch (``rung_patience``),
so its value approximates the checkpoint the full run keeps. On the
proxy's grid of 3 to 4 evaluations in all, the top rung missed a config whose best lay
half an epoch off the grid and picked the guide instead (benchmarks/README.md, section
7, variant 12).

Every promotion is decided on a whole rung. Successive halving decided as each trial
finished a rung (asynchronously, inside the trial: lora-search until 2026-11-28) lets
near-twins that a converging sampler proposes one after another each climb as the best
so far: 40% to 52% of the compute saved against every trial trained in full at the top
rung, where whole rungs saved 56% to 58% (benchmarks/README.md, section 7, variants 10
and 11). A rung below the top keeps at least MIN_PROMOTED of the search's configs
besides the baseline: neighbouring configs trade places between the proxy and rung 1.
The top rung from rung 2 up trains only the best config of the rung below, beside the
baseline: the configs there already train as their full run on at least a quarter of the
top's examples, and a second finalist bought little in test. In variant 18 the values of
standard's converged configs at rung 1 ranked their full-run test losses at 0.55, at the
top rung (the full run itself) at 0.12; in variant 17 the top swapped rung 1's best for
its second in two seeds of three, both times for a worse test loss (0.4375 -> 0.4569,
0.4449 -> 0.4724); in held-out seed 47 (variant 19) it swapped for a better one (0.4424 ->
0.4371); the second cost 0.5 to 0.7 full trainings a search. With 2 rungs
the top is rung 1, decided on the proxy's values alone, and keeps the quarter.

A rung's configs train in this process one after another, or with ``--workers N`` on the
worker processes, N at a time (``_rung_workers``); either way this process alone stores
the results.

The results are a study user attr (``lora_search.rung_results``), not trials: a value at
rung k is at another fidelity than the rung-0 values the sampler and pruner compare, and
it must not count towards ``--trials``. Each result is stored as soon as it exists, so an
interrupted run resumes with the configs still to train; a longer search that changes a
rung's best quarter trains only the newcomers, and a value once measured keeps counting.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any, Iterator

from ._study import ATTR_RUNG_RESULTS

if TYPE_CHECKING:
    import optuna

    from ._progress import TrainingLine
    from ._rung_workers import RungOutcome, RungWorkers
    from .objectives import LoraObjective
    from .spaces import ResolvedSpace

# the fewest of the search's configs a rung above the proxy trains, besides the baseline
MIN_PROMOTED = 2


def rung_record(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The rungs above the proxy a study trained, in order: each ``{"rung", "train_examples",
    "eval_examples", "results": {trial number as text: result}}``; [] without rungs."""
    record = attrs.get(ATTR_RUNG_RESULTS)
    return record["rungs"] if record is not None else []


def rung_values(trial: optuna.trial.FrozenTrial, rungs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trial's values rung by rung, from rung 0 (the trial itself) up to the highest it
    trained at, each ``{"rung", "examples", "eval_examples", "value", "examples_seen"}``;
    ``value`` None where the config was infeasible. [] when the trial has no value."""
    from ._trials import trial_outcome

    if trial_outcome(trial) != "complete" or trial.value is None:
        return []
    attrs = trial.user_attrs
    values = [{"rung": 0, "examples": attrs.get("proxy.train_examples"), "eval_examples": attrs.get("proxy.eval_examples"),
               "value": trial.value, "examples_seen": attrs.get("examples_seen")}]
    for rung in rungs:
        result = rung["results"].get(str(trial.number))
        if values[-1]["value"] is None:
            break
        if result is None:  # not trained there: the baseline skips the rungs between the proxy and the top
            continue
        values.append({"rung": rung["rung"], "examples": rung["train_examples"], "eval_examples": rung["eval_examples"],
                       "value": result["value"], "examples_seen": result["examples_seen"]})
    return values


def highest_entry(trial: optuna.trial.FrozenTrial, rungs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial's value at the highest rung where it has one, with that rung's entry
    (``rung_values``'s); None when it has no value."""
    feasible = [entry for entry in rung_values(trial, rungs) if entry["value"] is not None]
    return feasible[-1] if feasible else None


def rung_text(entry: dict[str, Any]) -> str:
    """Where a value comes from, e.g. ' at rung 2 (1,000 examples, 800 validation rows)'."""
    return f" at rung {entry['rung']} ({entry['examples']:,} examples, {entry['eval_examples']:,} validation rows)"


def promoted(trials: list[optuna.trial.FrozenTrial], direction: str, rungs: list[dict[str, Any]], rung: int, top: int) -> list[int]:
    """The trials ``rung`` (1 or more) trains, best first: the best quarter (at least
    MIN_PROMOTED) of the search's configs that rung ``rung - 1`` decided between, by their
    values there (the best one alone at a ``top`` rung of 2 or more), then the baseline at
    the ``top`` rung. At rung 1 the pool is every finished
    trial of the search (a pruned or infeasible one lost at rung 0); above, the configs the
    rung below trained.

    Below the top the baseline does not train: it is promoted whatever its value, so a value
    there decides nothing (a result an earlier lora-search stored there still counts)."""
    from ._trials import baseline_trial, trial_outcome
    from .objectives import RUNG_FACTOR

    base = baseline_trial(trials)
    if base is not None and trial_outcome(base) != "complete":
        base = None
    if rung == 1:
        pool = [t for t in trials if trial_outcome(t) in ("complete", "pruned", "infeasible") and t is not base]
        scored = {t.number: t.value for t in pool if trial_outcome(t) == "complete" and t.value is not None}
    else:
        below = promoted(trials, direction, rungs, rung - 1, top)
        results = rungs[rung - 2]["results"] if len(rungs) >= rung - 1 else {}
        pool = [number for number in below if base is None or number != base.number]
        scored = {number: results[str(number)]["value"] for number in pool
                  if str(number) in results and results[str(number)]["value"] is not None}
    count = 1 if rung == top and rung > 1 else max(MIN_PROMOTED, math.ceil(len(pool) / RUNG_FACTOR))
    best = sorted(scored, key=lambda number: scored[number], reverse=direction == "maximize")[:count]
    if base is None:
        return best
    trained_here = len(rungs) >= rung and str(base.number) in rungs[rung - 1]["results"]
    feasible_below = all(entry["value"] is not None for entry in rung_values(base, rungs) if entry["rung"] < rung)
    return best + ([base.number] if trained_here or (rung == top and feasible_below) else [])


def run_rungs(study: optuna.Study, objective: LoraObjective, resolved: ResolvedSpace, quiet: bool = False,
              workers: RungWorkers | None = None, deadline: float | None = None) -> str | None:
    """Train each rung above the proxy: the configs ``promoted`` to it that have no result
    there yet, here one after another or on ``workers`` as many at once as they have slots,
    storing each result as it comes. Ctrl-C stops between or inside configs; what finished
    is kept. After a config fails no rung above starts: the next run trains it again.

    No config starts once ``deadline`` (a ``time.time()``, the run's ``--timeout``) has
    passed; those in training finish. Returns "rung failed" after a failure and "timeout"
    when the deadline left configs untrained (the next run trains them either way), else None."""
    import time

    from ._progress import TrainingLine, format_duration, format_value
    from ._study import study_metric

    metric, direction = study_metric(study)
    trials = study.get_trials(deepcopy=False)
    rungs = rung_record(study.user_attrs)
    top = len(objective.rung_examples) - 1
    for rung in range(1, top + 1):
        if len(rungs) < rung:
            train_examples, eval_examples = objective.rung_fidelity(rung)
            rungs.append({"rung": rung, "train_examples": train_examples, "eval_examples": eval_examples, "results": {}})
            study.set_user_attr(ATTR_RUNG_RESULTS, {"rungs": rungs})
        current = rungs[rung - 1]
        wanted = promoted(trials, direction, rungs, rung, top)
        todo = [number for number in wanted if str(number) not in current["results"]]
        if todo and deadline is not None and time.time() >= deadline:
            _report_deadline(rung, len(todo), len(wanted))
            return "timeout"
        if todo and not quiet:
            at_once = f", {min(workers.size, len(todo))} at a time" if workers is not None else ""
            print(f"rung {rung}: {len(todo)} of {len(wanted)} config(s) train on {current['train_examples']:,} examples, "
                  f"scored on {current['eval_examples']:,} validation rows{at_once}", file=sys.stderr)
        # the workers' configs share one live line; here each config draws its own (_train_here)
        line = TrainingLine(f"  rung {rung}", metric, quiet=quiet or workers is None)
        outcomes = (workers.train(rung, todo, on_progress=_PoolProgress(line, rung, direction) if line.live else None,
                                  deadline=deadline)
                    if workers is not None else
                    _train_here(objective, resolved, trials, rung, todo, study.study_name, metric, quiet, deadline))
        failed = False
        with line:
            for index, outcome in enumerate(outcomes, start=1):
                line.clear()
                trial = trials[outcome.number]
                label = f"  rung {rung} {index}/{len(todo)}: trial {outcome.number}" + (" (baseline)" if trial.user_attrs.get("baseline") else "")
                if outcome.result is None:
                    failed = True
                    print(f"{label} failed ({outcome.error}); run the same command again to retry it", file=sys.stderr)
                    continue
                current["results"][str(outcome.number)] = outcome.result
                study.set_user_attr(ATTR_RUNG_RESULTS, {"rungs": rungs})
                if not quiet:
                    result = outcome.result
                    shown = f"{metric} {format_value(result['value'])}" if result["value"] is not None else result["stop_reason"]
                    below = [entry for entry in rung_values(trial, rungs) if entry["rung"] < rung][-1]
                    where = f" on {outcome.device}" if workers is not None else ""
                    print(f"{label}  {shown}  (rung {below['rung']} {format_value(below['value'])}, "
                          f"{format_duration(result['seconds'])}{where})", file=sys.stderr)
        if failed:
            return "rung failed"
        untrained = [number for number in todo if str(number) not in current["results"]]
        if untrained:  # nothing failed: the deadline stopped the rung
            _report_deadline(rung, len(untrained), len(wanted))
            return "timeout"
    return None


def _report_deadline(rung: int, untrained: int, wanted: int) -> None:
    print(f"rungs: the --timeout has passed with {untrained} of rung {rung}'s {wanted} config(s) untrained; "
          "the same command (with a longer --timeout) trains them and decides the winner", file=sys.stderr)


class _PoolProgress:
    """The workers' live line at a rung: the configs in training, the optimizer steps of the
    configs started so far together, and the best value any of them reached."""

    def __init__(self, line: TrainingLine, rung: int, direction: str) -> None:
        self.line = line
        self.rung = rung
        self.pick = min if direction == "minimize" else max

    def __call__(self, progress: dict[int, tuple[int, int, float | None]]) -> None:
        bests = [best for _, _, best in progress.values() if best is not None]
        training = [number for number, (done, total, _) in progress.items() if done < total]
        self.line.label = f"  rung {self.rung}: trial {', '.join(map(str, training))}"
        self.line(sum(done for done, _, _ in progress.values()), sum(total for _, total, _ in progress.values()),
                  self.pick(bests) if bests else None)


def _train_here(objective: LoraObjective, resolved: ResolvedSpace, trials: list[optuna.trial.FrozenTrial], rung: int,
                numbers: list[int], study_name: str, metric: str, quiet: bool, deadline: float | None) -> Iterator[RungOutcome]:
    """Train ``numbers`` at ``rung`` in this process, one after another, each with its live
    line on a terminal; nothing starts after an error or past ``deadline``."""
    import time

    from ._progress import TrainingLine
    from ._rung_workers import RungOutcome
    from ._study import full_run_config
    from ._trials import plain
    from .spaces import first_line

    for index, number in enumerate(numbers, start=1):
        if deadline is not None and time.time() >= deadline:
            return
        label = " (baseline)" if trials[number].user_attrs.get("baseline") else ""
        try:
            with TrainingLine(f"  rung {rung} {index}/{len(numbers)}: trial {number}{label}", metric, quiet) as line:
                result = objective.train_at_rung(full_run_config(resolved, trials[number])[0], rung, study_name, number,
                                                 on_progress=line if line.live else None)
        except Exception as error:  # nothing is stored: the next run trains it again
            yield RungOutcome(number, None, f"{type(error).__name__}: {first_line(error)}", str(objective.device))
            return
        yield RungOutcome(number, plain(result), None, str(objective.device))


def unfinished_rungs_note(study: optuna.Study) -> str | None:
    """A line for ``show`` and ``export`` while a study's rungs are not all trained (a run
    interrupted or timed out in them, or running them now): its winner may still change."""
    from .objectives import rung_sizes
    from ._study import ATTR_PROFILE, ATTR_WORKLOAD, study_metric

    workload, profile = study.user_attrs.get(ATTR_WORKLOAD, {}), study.user_attrs.get(ATTR_PROFILE, {})
    if workload.get("rungs", 1) < 2 or "dataset_size" not in profile:
        return None
    top = len(rung_sizes(workload["train_sample"], workload["rungs"], profile["dataset_size"])) - 1
    rungs = rung_record(study.user_attrs)
    if top < 1 or not rungs:  # no rung above the proxy, or the search has not reached its rungs yet
        return None
    trials = study.get_trials(deepcopy=False)
    direction = study_metric(study)[1]
    missing = sum(str(number) not in rung["results"] for rung in rungs
                  for number in promoted(trials, direction, rungs, rung["rung"], top))
    if not missing and len(rungs) == top:
        return None
    return (f"note: study {study.study_name!r} has rungs still to train, so its winner may change: the same "
            "'lora-search run' trains them")


def rung_notes(trials: list[optuna.trial.FrozenTrial], direction: str, rungs: list[dict[str, Any]], sizes: list[int],
               dataset_size: int) -> list[str]:
    """The summary's lines on the rungs: what each trained and what is still to train, the
    compute spent against training every trial at the top rung, and about what rungs up to
    the whole training split would cost."""
    from ._progress import format_duration

    if len(sizes) < 2 and not rungs:
        return []
    lines = []
    missing = 0
    for rung in rungs:
        wanted = promoted(trials, direction, rungs, rung["rung"], len(sizes) - 1)
        missing += sum(str(number) not in rung["results"] for number in wanted)
        lines.append(f"rung {rung['rung']}: {sum(str(n) in rung['results'] for n in wanted)} of {len(wanted)} config(s) trained "
                     f"on {rung['train_examples']:,} examples, scored on {rung['eval_examples']:,} validation rows")
    if missing or len(rungs) < len(sizes) - 1:
        lines.append("rungs still to train: run the same command again")
    searched = [t for t in trials if t.user_attrs.get("examples_seen") and t.user_attrs.get("proxy.train_examples")]
    if not searched or not any(rung["results"] for rung in rungs):  # interrupted before a rung's first result
        return lines
    spent, in_full, as_pruned = rung_compute(searched, rungs)
    saved, saved_pruned = 1 - spent / in_full, 1 - spent / as_pruned
    lines.append(f"compute: {spent:,} training examples in {len(searched)} trial(s) and their rungs; every trial trained in full "
                 f"at the top rung ({rungs[-1]['train_examples']:,} examples) would train ~{in_full:,.0f}: "
                 + (f"{saved:.0%} saved" if saved >= 0 else f"the rungs cost {-saved:.0%} more")
                 + f" ({saved_pruned:.0%} against the top rung with the trials pruned where they were)")
    full = full_split_rungs(sizes[0], dataset_size)
    if full[-1] > sizes[-1]:
        examples = full_split_compute(searched, rungs, full)
        seconds = sum(t.duration.total_seconds() for t in searched if t.duration is not None)
        seconds += sum(result["seconds"] for rung in rungs for result in rung["results"].values())
        lines.append(f"a search up to the whole training split ({full[-1]:,} examples, --rungs {len(full)}) would train "
                     f"~{examples:,.0f} examples: ~{format_duration(examples * seconds / spent)} at this run's speed")
    return lines


def rung_compute(trials: list[optuna.trial.FrozenTrial], rungs: list[dict[str, Any]]) -> tuple[int, float, float]:
    """Training examples the trials and their rungs spent; about what the trials would have
    spent each trained in full at the top rung instead (its epochs over the top rung's
    sample: the issue's yardstick, with no pruning); and the same with each trial stopped at
    the share of its run where the pruner stopped it on the proxy (a search at the top
    fidelity with the same pruner, where that pruner's own savings count for both)."""
    spent = sum(t.user_attrs["examples_seen"] for t in trials)
    spent += sum(result["examples_seen"] for rung in rungs for result in rung["results"].values())
    top = rungs[-1]["train_examples"]
    in_full = sum(t.user_attrs["proxy.epochs"] * top for t in trials)
    as_pruned = sum(t.user_attrs["examples_seen"] * top / t.user_attrs["proxy.train_examples"] for t in trials)
    return spent, in_full, as_pruned


def full_split_rungs(first: int, dataset_size: int) -> list[int]:
    """The rungs from ``first`` examples up to the whole training split."""
    from .objectives import RUNG_FACTOR, rung_sizes

    return rung_sizes(first, math.ceil(math.log(dataset_size / first, RUNG_FACTOR)) + 1, dataset_size)


def full_split_compute(trials: list[optuna.trial.FrozenTrial], rungs: list[dict[str, Any]], full: list[int]) -> float:
    """About the training examples a search with rungs ``full`` would spend: the same trials,
    as many of the search's configs at rung 1 as here, above it the best quarter (at least
    MIN_PROMOTED) of the rung below and at the top the best one, and the baseline at the top
    rung only, each making as many passes over its sample as the configs here did over theirs."""
    from ._trials import baseline_trial
    from .objectives import RUNG_FACTOR

    base = baseline_trial(trials)
    baseline_key = str(base.number) if base is not None else None
    results = [result for rung in rungs for result in rung["results"].values()]
    passes = sum(r["examples_seen"] for r in results) / sum(rung["train_examples"] * len(rung["results"]) for rung in rungs)
    examples = float(sum(t.user_attrs["examples_seen"] for t in trials))
    top = len(full) - 1
    searched = sum(key != baseline_key for key in rungs[0]["results"])
    for rung, size in enumerate(full[1:], start=1):
        if rung > 1:
            searched = 1 if rung == top else max(MIN_PROMOTED, math.ceil(searched / RUNG_FACTOR))
        examples += (searched + (base is not None and rung == top)) * passes * size
    return examples


__all__ = ["MIN_PROMOTED", "full_split_compute", "full_split_rungs", "highest_entry", "promoted", "rung_compute", "rung_notes", "rung_record",
           "rung_text", "rung_values", "run_rungs"]
