"""lora-search run: search one scenario's space with brief real LoRA trainings."""

from __future__ import annotations

import argparse

from ._options import add_storage_option, add_workload_options, workload_options
from ._tracking import add_report_to_option

DESCRIPTION = """\
Search a scenario's space: each trial briefly fine-tunes LoRA with the settings the
sampler proposes, on a sample of the data, and reports its metric after every
evaluation so the pruner can stop hopeless trials early.

The first trial of every study is the scenario's guide preset fitted to the data (the
baseline; what train --preset NAME --fit-to-data trains, even outside the space), so the
summary says how much better than the guide the search found. --trials is the number
of finished trials the study should hold (complete + pruned + infeasible): running the
same command again resumes; a larger --trials adds the difference (default: the space's
study.trials, 16 for standard, whose rungs retrain the best quarter; else 30). The study stores
its space, model, data and metric, so a resume needs only --study (or the same
--space) and refuses options that would change what is measured.

examples:
  lora-search run --space memory-constrained --trials 30
  lora-search run --space quick-experiment --trials 10 --timeout 20m --sampler random
  lora-search run --space my-space.yaml --model ./my-model --data reviews.csv \\
      --text-column review --label-column score --metric accuracy
  lora-search run --study memory-constrained.minilm.fine-food --trials 40   (resume)
  lora-search run --space memory-constrained --trials 30 --rungs 3   (128, 512, 2,048 examples)

samplers: tpe (default; models parameters jointly), random, gp (Gaussian process),
cmaes (CMA-ES, an evolution strategy over the numeric parameters; choices are drawn at
random; needs the cmaes package), qmc (quasi-random, even coverage). All are seeded by --seed.
pruners: successive-halving (default unless the scenario names one), median,
percentile (best quarter only), hyperband, patient (median, with two bad evaluations
of grace), wilcoxon (stops a trial whose evaluations are worse than the best trial's at
the same points, by a signed-rank test at p 0.1), threshold (only diverged trials), none.

rungs: with --rungs K the winner is chosen on more data than the proxy's, by successive
halving over whole rungs. The trials are rung 0 (--train-sample examples, scored on
--eval-sample validation rows, pruned as without rungs). Once the study holds its target,
rung 1 trains the best quarter of rung 0 (at least 2) again, each a fresh adapter on 4x
the examples for its epochs, scored on 4x the validation rows, unpruned; rung 2 the best
quarter of rung 1, and so on (sizes capped at the splits), a top rung above rung 1 the
best config of the rung below alone; the baseline trains again at the top rung only, the
one that decides. The winner (summary, show, export) is the best config at the top rung;
the summary says how much compute the rungs saved against every trial at the top rung.
Each result is stored as it comes: an interrupted run, or one whose --timeout passed
mid-rung (no config starts after it), resumes with the configs still to train, a longer
search trains only newcomers; on a terminal a live line shows the config training.
With --workers N a rung trains N configs at a time, one on each worker's GPU or
share of the CPU cores. A rung trains each config as export writes it for the full run and
evaluates it as often per epoch as that run does, up to 4 times, its patience spanning as
much of an epoch as the run's. The baseline is the guide preset fitted to the data, so
where it wins the top rung, export writes that preset.
Measured on quick-experiment (benchmarks/README.md, section 7, variants 11 to 14, 16
trials), --rungs 3 saved 56% to 65% against every trial trained in full at the top rung;
on standard (variants 17 to 19) its pick beat the fitted guide preset by 8% to 18% in test
loss on each of 6 seeds, at 3.0 to 5.1 full trainings of compute.
Default: for a new study, the space's study.rungs (3 for standard; see lora-search spaces
show NAME), else one rung; --rungs 1 for one fidelity. A resumed study keeps its own.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    from ._samplers import PRUNERS, SAMPLERS

    parser.add_argument("--space", metavar="NAME|FILE", help="a scenario name (see 'lora-search spaces') or a space YAML file")
    parser.add_argument("--trials", type=int, metavar="N",
                        help="finished trials the study should hold (default: the space's study.trials, else 30)")
    parser.add_argument("--timeout", metavar="DURATION", help="no new trial, and no new rung config, after this long, e.g. 30m, 2h, 1h30m (a bare number "
                        "is seconds); what is "
                        "left trains when the same command runs again (default: the scenario's)")
    parser.add_argument("--study", metavar="NAME", help="study name (default: SPACE.MODEL.DATA, e.g. memory-constrained.minilm.fine-food)")
    add_storage_option(parser, forms=True)
    parser.add_argument("--sampler", choices=SAMPLERS, help="how parameters are proposed (default tpe)")
    parser.add_argument("--pruner", choices=PRUNERS, help="how hopeless trials are stopped (default: the scenario's, else successive-halving)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes on this study: one GPU each, or the CPU cores split between them; "
                        "the rungs train on them too (default 1)")
    parser.add_argument("--devices", metavar="LIST", help="GPUs for the workers, e.g. 0,1,3, numbered as "
                        "within CUDA_VISIBLE_DEVICES where it is set (default: all GPUs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-trial lines, only the summary")
    add_report_to_option(parser, runs="Each trial is a run STUDY/trial-N (its search parameters, LoRA settings, "
                         "training loss, evaluations, derived values and value) in a group named after the study; "
                         "each config a rung trains is a run STUDY/trial-N-rung-K; "
                         "the end of the run adds STUDY/summary (baseline, best, importances).")
    add_workload_options(parser, trials=True)


def run(args: argparse.Namespace) -> int:
    import sys

    from ._engine import RunRequest, run_search
    from ._workers import sigterm_as_interrupt
    from .spaces import parse_duration

    request = RunRequest(
        space=args.space,
        trials=args.trials,
        timeout=parse_duration(args.timeout) if args.timeout is not None else None,
        study=args.study,
        storage=args.storage,
        sampler=args.sampler,
        pruner=args.pruner,
        workload=workload_options(args),
        quiet=args.quiet,
        workers=args.workers,
        devices=args.devices,
        report_to=tuple(args.report_to or ()),
    )
    with sigterm_as_interrupt():  # `kill` ends the run like Ctrl-C: the trial is recorded as interrupted
        summary = run_search(request)
    print(summary.as_text())
    if summary.stopped_because == "interrupted":
        print("lora-search run: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    if summary.stopped_because == "rung failed":  # the search itself finished; its winner is not decided yet
        print("lora-search run: a config failed at a rung (see above); run the same command again to train it", file=sys.stderr)
        return 1
    return 0
