"""``--report-to``: the experiment trackers of ``run`` and ``train``.

The trackers themselves (what a run holds, where files go) are ``lora_search.objectives``'
``Tracking``; here is the option both commands share, the check that each tracker's
package is installed (before a study is created or changed, before a model is loaded),
the default folder (``tracking/`` beside the storage, so ``studies/tracking`` by default)
and the study summary's run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import UsageError

if TYPE_CHECKING:
    from ._engine import RunSummary
    from .objectives import Tracking

FOLDER = "tracking"  # beside the storage's file (for a database server: beside the default one)


def add_report_to_option(parser: argparse.ArgumentParser, *, runs: str) -> None:
    """``--report-to TRACKER`` (repeatable); ``runs`` says what the command's tracked runs are."""
    from .objectives import TRACKERS

    parser.add_argument(
        "--report-to", action="append", choices=TRACKERS, metavar="TRACKER",
        help=f"also log to an experiment tracker: {', '.join(TRACKERS)}; repeat it for several (default: none). "
             f"{runs} Files go to {FOLDER}/ beside the storage (studies/{FOLDER}) unless MLFLOW_TRACKING_URI, "
             "TENSORBOARD_LOGGING_DIR or WANDB_DIR say otherwise; W&B runs offline unless WANDB_MODE or "
             "WANDB_API_KEY is set. Where each one writes and how to view it is printed at the start. "
             "Needs: pip install 'lora-search[track]'",
    )


def check_report_to(report_to: Sequence[str]) -> None:
    """UsageError for an unknown tracker or one whose package is not installed."""
    from .objectives import TRACKERS, missing_packages

    unknown = [name for name in report_to if name not in TRACKERS]
    if unknown:
        raise UsageError(f"--report-to {unknown[0]!r} is not a tracker: choose from {', '.join(TRACKERS)}")
    missing = missing_packages(report_to)
    if missing:
        packages = " ".join(missing.values())
        raise UsageError(f"--report-to {' '.join(missing)} needs {packages}, which is not installed: "
                         f"pip install 'lora-search[track]' (or pip install {packages})")


def tracking_for(report_to: Sequence[str], storage: str | None) -> Tracking | None:
    """The trackers asked for (None: none), writing beside ``storage``; see ``check_report_to``."""
    from ._storage import resolve_storage_spec
    from .objectives import Tracking

    if not report_to:
        return None
    check_report_to(report_to)
    spec = resolve_storage_spec(storage)
    beside = spec.path.parent if spec.path is not None else Path("studies")
    return Tracking(tuple(report_to), str(beside / FOLDER))


def open_group(tracking: Tracking, group: str, *, quiet: bool) -> None:
    """Prepare the group's runs and say on stderr where each tracker writes and how to view it."""
    for line in tracking.prepare(group):
        if not quiet:
            print(f"tracking: {line}", file=sys.stderr)


def log_summary(tracking: Tracking, summary: RunSummary) -> None:
    """The study's summary as the run ``STUDY/summary`` of its group: the trial counts, the
    baseline's and best values and the importances as metrics, the summary text as a
    document. The trials are stored by now: a tracker that fails costs a warning, never the run."""
    import dataclasses

    from .spaces import first_line

    metrics = {f"trials.{state}": count for state, count in dataclasses.asdict(summary.counts).items()}
    if summary.baseline is not None and summary.baseline["value"] is not None:
        metrics |= {"baseline_trial": summary.baseline["number"], "baseline_value": summary.baseline["value"]}
    if summary.best is not None:
        metrics |= {"best_trial": summary.best["number"], "best_value": summary.best["value"]}
    metrics |= {f"importance.{name}": share for name, share in (summary.importances or {}).items()}
    try:
        with tracking.run(summary.study_name, "summary") as run:
            run.log(metrics=metrics, texts={"summary": summary.as_text()})
    except Exception as error:
        print(f"warning: the study summary was not logged to {', '.join(tracking.report_to)}: {first_line(error)}",
              file=sys.stderr)


__all__ = ["add_report_to_option", "check_report_to", "log_summary", "open_group", "tracking_for"]
