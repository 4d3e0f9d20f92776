"""A study's plots (optuna.visualization, plotly) as one self-contained HTML page."""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._files import write_atomically

if TYPE_CHECKING:
    import optuna


def _figures(study: optuna.Study) -> list[tuple[str, str, Any]]:
    """(title, explanation, figure or None-with-reason) for each section."""
    import optuna.visualization as vis

    from ._rungs import rung_record
    from ._study import importances, study_metric
    from ._trials import baseline_trial, trial_outcome

    metric, direction = study_metric(study)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if trial_outcome(t) == "complete"]
    sections: list[tuple[str, str, Any]] = []
    rungs = rung_record(study.user_attrs)
    # the trials' values are the proxy's (rung 0); the rungs above have their own table
    at_rung = " at rung 0" if rungs else ""

    history = vis.plot_optimization_history(study, target_name=metric)
    base = baseline_trial(trials)
    if base is not None and base.value is not None:
        history.add_hline(y=base.value, line_dash="dash", line_color="gray",
                          annotation_text=f"baseline (guide preset, trial {base.number}): {base.value:.4g}")
    sections.append(("Optimization history",
                     f"{metric} of every complete trial{at_rung} and the best so far; the dashed line is the baseline.", history))

    if any(t.intermediate_values for t in trials):
        sections.append(("Intermediate values", f"{metric} after each evaluation{at_rung}; lines that stop early were pruned.",
                         vis.plot_intermediate_values(study)))
    else:
        sections.append(("Intermediate values", "no trial reported intermediate values yet.", None))

    if rungs:
        sections.append(_rungs_section(study, rungs, metric, direction))

    shares, note = importances(study)
    if shares:
        sections.append(("Parameter importances", "how much of the variation in the metric each parameter explains.",
                         vis.plot_param_importances(study, target_name=metric)))
    else:
        sections.append(("Parameter importances", note, None))

    if len(complete) >= 2:
        sections.append(("Parallel coordinates", f"each line is a complete trial: its parameters and its metric{at_rung}.",
                         vis.plot_parallel_coordinate(study, target_name=metric)))
    else:
        sections.append(("Parallel coordinates", f"need at least 2 complete trials, have {len(complete)}.", None))
    return sections


def _rungs_section(study: optuna.Study, rungs: list[dict[str, Any]], metric: str, direction: str) -> tuple[str, str, Any]:
    """The configs that trained above the proxy as a table, the winner first: their value at
    each rung (blank where they did not train there)."""
    import plotly.graph_objects as go

    from ._rungs import rung_values
    from ._trials import ranked_trials

    climbed = [(t, rung_values(t, rungs)) for t in ranked_trials(study.get_trials(deepcopy=False), direction, rungs)]
    climbed = [(t, values) for t, values in climbed if len(values) > 1]
    columns = {"trial": [f"{t.number} (baseline)" if t.user_attrs.get("baseline") else str(t.number) for t, _ in climbed]}
    by_rung = [{entry["rung"]: entry["value"] for entry in values} for _, values in climbed]
    for rung in range(len(rungs) + 1):
        examples = climbed[0][1][0]["examples"] if rung == 0 and climbed else rungs[rung - 1]["train_examples"] if rung else 0
        columns[f"{metric} at rung {rung} ({examples:,} examples)"] = [
            ("infeasible" if values[rung] is None else f"{values[rung]:.4g}") if rung in values else "" for values in by_rung]
    table = go.Figure(go.Table(header={"values": list(columns)}, cells={"values": list(columns.values())}))
    table.update_layout(height=120 + 30 * len(climbed), margin={"t": 10, "b": 10})
    return ("Rungs", "the configs trained again above the proxy, best first (by the highest rung reached): "
            "the first row is the winner.", table)


def write_report(study: optuna.Study, output: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Write the report atomically; returns the titles of the plotted sections, and the
    others with why they have no plot ("parallel coordinates: need at least 2 ...")."""
    from ._errors import SearchError
    from ._trials import count_states

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sections = _figures(study)
    parts = []
    plotly_included = False
    plotted, unplotted = [], []
    for title, explanation, figure in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>\n<p>{html.escape(explanation)}</p>")
        if figure is not None:
            parts.append(figure.to_html(full_html=False, include_plotlyjs=not plotly_included))
            plotly_included = True
            plotted.append(title.lower())
        else:
            unplotted.append(f"{title.lower()}: {explanation.rstrip('.')}")
    name = html.escape(study.study_name)
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lora-search report: {name}</title></head>\n"
        f"<body style=\"font-family: sans-serif; max-width: 1100px; margin: auto\">\n"
        f"<h1>Study {name}</h1>\n<p>{html.escape(count_states(study.get_trials(deepcopy=False)).as_text())}</p>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    target = Path(output)
    try:
        write_atomically(target, page)
    except OSError as error:
        raise SearchError(f"cannot write {str(target)!r}: {error.strerror}") from None
    return plotted, unplotted
