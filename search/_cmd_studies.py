"""lora-search studies: the studies in a storage, with trial counts and best values."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ._options import add_storage_option

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

DESCRIPTION = """\
List the studies in a storage: how many trials each holds by state (complete, pruned,
infeasible, failed, running), its best value and its baseline (the guide preset's
trial), so you can pick one to show, watch or export.

examples:
  lora-search studies
  lora-search studies --storage sqlite:///elsewhere.db
  lora-search show memory-constrained.minilm.fine-food --top 5
"""


def configure(parser: argparse.ArgumentParser) -> None:
    add_storage_option(parser)


def run(args: argparse.Namespace) -> int:
    from ._storage import open_storage, storage_label
    from ._rungs import rung_record
    from ._study import ATTR_DIRECTION, ATTR_METRIC, ATTR_SPACE
    from ._trials import baseline_trial, count_states, ranked_trials

    storage = open_storage(args.storage, create=False)
    studies = sorted(storage.get_all_studies(), key=lambda s: s.study_name)
    if not studies:
        print(f"no studies in {storage_label(args.storage)} yet: start one with 'lora-search run --space NAME'")
        return 0
    rows = [("study", "space", "metric", "complete", "pruned", "infeasible", "failed", "running", "best", "baseline")]
    for frozen in studies:
        trials = storage.get_all_trials(storage.get_study_id_from_name(frozen.study_name), deepcopy=False)
        counts = count_states(trials)
        attrs = frozen.user_attrs
        direction = attrs.get(ATTR_DIRECTION) or frozen.directions[0].name.lower()
        rungs = rung_record(attrs)
        ranked = ranked_trials(trials, direction, rungs)
        base = baseline_trial(trials)
        rows.append((
            frozen.study_name,
            attrs.get(ATTR_SPACE, "-"),
            f"{attrs.get(ATTR_METRIC, 'value')} ({direction[:3]})",
            str(counts.complete), str(counts.pruned), str(counts.infeasible), str(counts.failed), str(counts.running),
            _value_cell(ranked[0], rungs) if ranked else "-",
            _baseline_cell(base, rungs),
        ))
    print(f"studies in {storage_label(args.storage)}:")
    print(format_table(rows))
    return 0


def _baseline_cell(base: FrozenTrial | None, rungs: list[dict[str, Any]]) -> str:
    """The baseline's value, or its outcome where it has none to compare (infeasible: its
    value broke a constraint, as 'show' and 'run' say)."""
    from ._trials import trial_outcome

    if base is None or base.value is None:
        return "-" if base is None else trial_outcome(base)
    if trial_outcome(base) == "infeasible":
        return "infeasible"
    return _value_cell(base, rungs)


def _value_cell(trial: FrozenTrial, rungs: list[dict[str, Any]]) -> str:
    """A trial's standing value, with the rung it was measured at where that is above the proxy."""
    from ._progress import format_value
    from ._rungs import highest_entry

    entry = highest_entry(trial, rungs) if rungs else None
    if entry is None or entry["rung"] == 0:
        return format_value(trial.value)
    return f"{format_value(entry['value'])} (rung {entry['rung']})"


def format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
