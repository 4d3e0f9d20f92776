"""lora-search report: one self-contained HTML page of a study's plots."""

from __future__ import annotations

import argparse

from ._options import add_storage_option, path_text

DESCRIPTION = """\
Write a study's plots into one HTML file that opens offline (plotly's JavaScript is
embedded once): the optimization history with the baseline (the guide preset) marked,
the intermediate values of every trial (where pruning cut trials short), parameter
importances, and parallel coordinates of the parameters against the metric.

examples:
  lora-search report memory-constrained.minilm.fine-food --output report.html
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY", help="study name (see 'lora-search studies')")
    parser.add_argument("--output", default="report.html", type=path_text, metavar="FILE", help="HTML file to write (default report.html)")
    add_storage_option(parser)


def run(args: argparse.Namespace) -> int:
    from ._report import write_report
    from ._study import load_lora_study

    study = load_lora_study(args.study, args.storage)
    plotted, unplotted = write_report(study, args.output)
    print(f"wrote {args.output} ({', '.join(plotted)})")
    for section in unplotted:
        print(f"  no plot of {section}")
    return 0
