"""Finalists: the search's final choice, made at a higher fidelity than the proxy's.

A proxy trial is a few optimizer steps on a small sample. It tells good configs from
bad ones, but within its top band the order is noise (benchmarks/README.md, section 7).
With ``run --finalists K``, once the search holds its target, the K best complete
trials and the baseline train again, each on RUNG_FACTOR times the proxy's training
examples for its epochs, scored on RUNG_FACTOR times its validation rows, unpruned. The
winner is the best of them there: ``ranked_trials`` puts the finalists first, by that value.

The results are a study user attr (``lora_search.finalists``), not trials: a finalist's
value is at another fidelity than the proxy values the sampler and pruner compare, and
it must not count towards ``--trials``. Each result is stored as soon as it exists, so
an interrupted run resumes with the finalists still to train; a longer search that
changes the top K trains only the newcomers.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._study import ATTR_FINALISTS

if TYPE_CHECKING:
    import optuna

    from .objectives import LoraObjective
    from .spaces import ResolvedSpace


def finalist_numbers(trials: list[optuna.trial.FrozenTrial], direction: str, count: int) -> list[int]:
    """The trials to train as finalists: the ``count`` best complete feasible trials by their
    proxy value, and the baseline (the guide preset), compared with them at the same fidelity."""
    from ._trials import baseline_trial, ranked_trials, trial_outcome

    numbers = [t.number for t in ranked_trials(trials, direction)[:count]]
    base = baseline_trial(trials)
    if count and base is not None and trial_outcome(base) == "complete" and base.number not in numbers:
        numbers.append(base.number)
    return numbers


def run_finalists(study: optuna.Study, objective: LoraObjective, resolved: ResolvedSpace, count: int,
                  quiet: bool = False) -> None:
    """Train the study's finalists that have no result yet, storing each result as it comes
    (``count`` 0 keeps the results but lets the proxy choose again). Ctrl-C stops between
    or inside finalists; what finished is kept."""
    from ._progress import format_duration, format_value
    from ._study import study_metric, trial_config
    from .spaces import first_line
    from ._trials import plain

    metric, direction = study_metric(study)
    trials = study.get_trials(deepcopy=False)
    train_examples, eval_examples = objective.finalist_sizes()
    results = dict((study.user_attrs.get(ATTR_FINALISTS) or {}).get("results", {}))
    record = {"count": count, "train_examples": train_examples, "eval_examples": eval_examples, "results": results}
    study.set_user_attr(ATTR_FINALISTS, record)
    todo = [number for number in finalist_numbers(trials, direction, count) if str(number) not in results]
    if todo and not quiet:
        print(f"finalists: {len(todo)} trial(s) train again on {train_examples:,} examples, scored on "
              f"{eval_examples:,} validation rows", file=sys.stderr)
    for index, number in enumerate(todo, start=1):
        trial = trials[number]
        try:
            result = objective.train_finalist(trial_config(resolved, trial))
        except Exception as error:  # nothing is stored: the next run trains it again
            print(f"  finalist {index}/{len(todo)}: trial {number} failed ({type(error).__name__}: {first_line(error)}); "
                  "run the same command again to retry it", file=sys.stderr)
            continue
        results[str(number)] = plain(result)
        study.set_user_attr(ATTR_FINALISTS, record)
        if not quiet:
            shown = f"{metric} {format_value(result['value'])}" if result["value"] is not None else result["stop_reason"]
            label = " (baseline)" if trial.user_attrs.get("baseline") else ""
            print(f"  finalist {index}/{len(todo)}: trial {number}{label}  {shown}  (proxy {format_value(trial.value)}, "
                  f"{format_duration(result['seconds'])})", file=sys.stderr)


def finalist_notes(trials: list[optuna.trial.FrozenTrial], direction: str, finalists: dict[str, Any] | None) -> list[str]:
    """The summary's line on the finalists: how many trained, at what fidelity and cost, those
    still to train, and whether the final choice overturned the proxy's."""
    from ._trials import ranked_trials

    if not finalists or not finalists.get("count"):
        return []
    wanted = finalist_numbers(trials, direction, finalists["count"])
    missing = sum(str(number) not in finalists["results"] for number in wanted)
    line = (f"finalists: {len(wanted) - missing} of {len(wanted)} trained again on {finalists['train_examples']:,} examples, "
            f"scored on {finalists['eval_examples']:,} validation rows ({finalist_compute(finalists):,} training examples)")
    if missing:
        line += f"; {missing} still to train: run the same command again"
    by_proxy, final = ranked_trials(trials, direction), ranked_trials(trials, direction, finalists)
    if final and final[0].number != by_proxy[0].number:
        line += f"; the winner is not the proxy's best (trial {by_proxy[0].number})"
    return [line]


def finalist_value(trial: optuna.trial.FrozenTrial, finalists: dict[str, Any] | None) -> float | None:
    """The trial's value as a finalist, when it trained as one and was feasible."""
    if not finalists or not finalists.get("count"):  # --finalists 0: the proxy's choice again
        return None
    result = finalists.get("results", {}).get(str(trial.number))
    return None if result is None else result["value"]


def finalist_text(finalists: dict[str, Any]) -> str:
    """Where a finalist's value comes from, e.g. ' as a finalist (512 examples, 512 validation rows)'."""
    return f" as a finalist ({finalists['train_examples']:,} examples, {finalists['eval_examples']:,} validation rows)"


def finalist_compute(finalists: dict[str, Any] | None) -> int:
    """Training examples the finalists' runs consumed."""
    return sum(result["examples_seen"] for result in (finalists or {}).get("results", {}).values())


__all__ = ["finalist_compute", "finalist_notes", "finalist_numbers", "finalist_text", "finalist_value", "run_finalists"]
