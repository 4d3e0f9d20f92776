"""Workers: trials per hour with 1 worker x 2 threads vs 2 workers x 1 thread on this machine,
and the rungs after the trials.

Both arrangements run the same trials: one study each on a journal file (the storage for
several processes on one host), prepared with the memory-constrained baseline plus
N-1 parameter sets drawn once by a seeded random sampler from the scenario's space and
enqueued in the same order, pruner none, ``--rungs 2``. Then ``lora-search run --study
NAME --trials N`` runs them as a user would: ``--workers 1 --threads 2`` (one process) and
``--workers 2`` (two processes, one thread each). Trials per hour count from the first
trial's start to the last one's end ("trial span"); the wall time of the whole command
adds process start-up and model loading. The rung (the best quarter and the baseline on
4x the training examples) trains after the last trial: one config after another in the
one process, two at a time on the two workers; its wall time runs from the last trial's
end to the command's.

    python benchmarks/workers.py            # 10 trials per arrangement (see --help for the workload)
    python benchmarks/workers.py --quick    # 2 trials per arrangement on a tiny model
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Any

import _common

RUNG_RESULTS = "lora_search.rung_results"
ARRANGEMENTS = (("1 worker x 2 threads", ["--workers", "1", "--threads", "2"]), ("2 workers x 1 thread", ["--workers", "2"]))


def drawn_params(resolved: Any, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` parameter sets from the space, drawn by a seeded random sampler."""
    import optuna

    draft = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    params = []
    for _ in range(count):
        trial = draft.ask()
        resolved.sample(trial)
        params.append(dict(trial.params))
        draft.tell(trial, 0.0)
    return params


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--trials", type=int, default=None, help="trials per arrangement (default 10; 2 with --quick)")
    parser.add_argument("--rounds", type=int, default=1, help="times each arrangement runs, alternating")
    parser.add_argument("--train-sample", type=int, default=64, help="training examples per trial (full mode)")
    parser.add_argument("--eval-sample", type=int, default=64, help="evaluation examples per evaluation (full mode)")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per example (full mode)")
    args = parser.parse_args(argv)
    trials = args.trials or (2 if args.quick else 10)
    _common.quiet_libraries()

    import optuna

    from lora_search import RunRequest, open_storage
    from lora_search._loop import ATTR_SURPLUS
    from lora_search._prepare import prepare
    from lora_search._trials import count_states

    space = "memory-constrained"
    rows = []
    with _common.scratch_folder() as scratch_name:
        scratch = _common.Path(scratch_name)
        fields = {"rungs": 2}
        if not args.quick:
            fields.update(train_sample=args.train_sample, eval_sample=args.eval_sample, max_length=args.max_length)
        work = _common.workload(args.quick, scratch, **fields)
        run = _common.Run("workers", args.quick, {"space": space, "trials": trials, "rounds": args.rounds, "workload": work.to_dict(),
                                                   "storage": "journal file", "pruner": "none"})
        # one prepared study (baseline + the drawn configs queued), copied for every run
        template = str(scratch / "template.journal")
        prepared = prepare(RunRequest(space=space, trials=trials, study="bench", storage=template, pruner="none",
                                      workload=work, quiet=True))
        for entry in drawn_params(prepared.resolved, trials - 1, work.seed):
            prepared.study.enqueue_trial(entry)
        del prepared
        for round_number in range(args.rounds):
            for label, options in ARRANGEMENTS:
                storage = str(scratch / f"run-{len(rows)}.journal")
                shutil.copyfile(template, storage)
                command = [sys.executable, "-m", "lora_search", "run", "--study", "bench", "--storage", storage,
                           "--trials", str(trials), "--quiet", *options]
                started = time.time()
                finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                ended = time.time()
                wall = ended - started
                if finished.returncode != 0:
                    raise RuntimeError(f"{' '.join(command)} exited {finished.returncode}: {finished.stderr.strip()[-2000:]}")
                study = optuna.load_study(study_name="bench", storage=open_storage(storage))
                windows = [w for w in _common.trial_windows(study) if not w[0].user_attrs.get(ATTR_SURPLUS)]
                span = max(end for _, _, end in windows) - min(start for _, start, _ in windows)
                counts = count_states(study.get_trials(deepcopy=False))
                examples = sum(t.user_attrs.get("examples_seen") or 0 for t, _, _ in windows)
                failed = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.FAIL]
                # a surplus trial (two workers started the last trial at once) ends before it trains
                surplus = [t for t in failed if t.user_attrs.get(ATTR_SURPLUS)]
                failures = [f"trial {t.number}: {t.user_attrs.get('error') or t.system_attrs.get('fail_reason', 'no reason recorded')}"
                            for t in failed if t not in surplus]
                (rung,) = study.user_attrs[RUNG_RESULTS]["rungs"]
                rows.append({"round": round_number + 1, "arrangement": label, "finished": counts.finished, "failed": len(failures),
                             "failures": failures, "surplus": len(surplus),
                             "examples": examples, "span_s": span, "wall_s": wall,
                             "rung_configs": sorted(int(number) for number in rung["results"]),
                             "rung_examples": sum(result["examples_seen"] for result in rung["results"].values()),
                             "rung_wall_s": ended - max(end for _, _, end in windows),
                             "trials_per_hour": counts.finished / span * 3600,
                             "trials_per_hour_wall": counts.finished / wall * 3600,
                             "mean_trial_s": sum(end - start for _, start, end in windows) / len(windows)})
                print(f"{label}: {span:.0f} s trial span, {rows[-1]['rung_wall_s']:.0f} s rung, {wall:.0f} s wall", file=sys.stderr,
                      flush=True)

    def median_rate(label: str, key: str) -> float:
        return _common.median_spread([r[key] for r in rows if r["arrangement"] == label])[0]

    one, two = (label for label, _ in ARRANGEMENTS)
    summary = {"speedup_span": median_rate(two, "trials_per_hour") / median_rate(one, "trials_per_hour"),
               "speedup_wall": median_rate(two, "trials_per_hour_wall") / median_rate(one, "trials_per_hour_wall"),
               "speedup_rungs": median_rate(one, "rung_wall_s") / median_rate(two, "rung_wall_s")}
    body = (
        f"`{space}`: the guide baseline and {trials - 1} seeded random configs, the same in every run; workload: train sample "
        f"{work.train_sample}, eval sample {work.eval_sample}, max length {work.max_length}; journal storage, pruner none; "
        f"--rungs 2 (the rung trains on {work.train_sample * 4} examples).\n\n"
        + _common.markdown_table([("round", "round"), ("arrangement", "arrangement"), ("finished", "finished"), ("failed", "failed"),
                                  ("surplus", "surplus"),
                                  ("examples", "examples"), ("trial span s", "span_s"), ("command wall s", "wall_s"),
                                  ("trials/hour (span)", "trials_per_hour"), ("trials/hour (wall)", "trials_per_hour_wall"),
                                  ("mean trial s", "mean_trial_s"), ("rung configs", "rung_configs"),
                                  ("rung examples", "rung_examples"), ("rung wall s", "rung_wall_s")], rows)
        + f"\n**2 workers x 1 thread vs 1 worker x 2 threads: {summary['speedup_span']:.2f}x the trials per hour** over the "
        f"trial span, {summary['speedup_wall']:.2f}x over the whole command; the rung: {summary['speedup_rungs']:.2f}x as fast.\n"
    )
    _common.write(run.record(rows, summary), body, _common.results_folder(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
