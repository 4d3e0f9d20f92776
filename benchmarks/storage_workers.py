"""Throughput of shared studies: finished trials per minute by storage and worker count.

Each worker is a separate process running the same loop as ``lora-search run`` (Optuna's
optimize with lora-search's TrialGate: wait for room, surplus check, dead-trial reclaim),
on a cheap objective that suggests six parameters, reports three intermediate values
and sleeps OBJECTIVE_SECONDS in total. So the difference from the ideal
(workers x 60 / OBJECTIVE_SECONDS per minute) is what the storage and the coordination
cost. Storages: SQLite file, journal file, PostgreSQL 15 and MariaDB (throwaway servers,
as in the tests; each skipped with a note where its server binaries are missing).

    python benchmarks/storage_workers.py            # full: 1, 2, 4 workers, 48 trials each
    python benchmarks/storage_workers.py --quick    # 1 and 2 workers, 8 trials: well under a minute
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

import _common

HERE = Path(__file__).resolve().parent
OBJECTIVE_SECONDS = 0.3  # per trial: 3 "evaluations" of 0.1 s


def _objective(trial) -> float:
    lr = trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    r = trial.suggest_categorical("r", [4, 8, 16, 32])
    trial.suggest_float("lora_dropout", 0.0, 0.1)
    trial.suggest_categorical("batch_size", [8, 16, 32])
    trial.suggest_int("epochs", 1, 3)
    trial.suggest_categorical("target_modules", ["attention", "all-linear"])
    value = 0.0
    for step in range(3):
        time.sleep(OBJECTIVE_SECONDS / 3)
        value = (lr * 1000 - 0.3) ** 2 + 1 / r + step * 0.01
        trial.report(value, step)
    return value


def _worker(spec: str, target: int, seed: int, errors, windows) -> None:
    import optuna

    from lora_search import open_storage
    from lora_search._loop import TrialGate

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="bench", storage=open_storage(spec),
                              sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    gate = TrialGate(target, deadline=None)
    started: dict[int, float] = {}

    def timed_objective(trial) -> float:
        started[trial.number] = time.time()
        gate.admit(study, trial)
        return _objective(trial)

    def record_window(study, trial) -> None:
        # this host's clock, not the storage's: MySQL keeps trial times in whole seconds
        if trial.state.name in ("COMPLETE", "PRUNED"):
            windows.append((started[trial.number], time.time()))

    try:
        if not gate.should_stop(study):
            study.optimize(timed_objective, callbacks=[record_window, gate], catch=(RuntimeError,))
    except Exception as error:  # counted, e.g. SQLite "database is locked"
        errors.append(f"{type(error).__name__}: {error}".splitlines()[0])


def measure(kind: str, spec: str, workers: int, trials: int) -> dict:
    import optuna
    from optuna.trial import TrialState

    from lora_search import open_storage
    from lora_search._loop import ATTR_SURPLUS

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name="bench", storage=open_storage(spec))
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    errors, windows = manager.list(), manager.list()  # windows: (objective called, trial told) per finished trial
    processes = [context.Process(target=_worker, args=(spec, trials, seed, errors, windows)) for seed in range(workers)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    all_trials = optuna.load_study(study_name="bench", storage=open_storage(spec)).get_trials()
    finished = [t for t in all_trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    windows = list(windows)
    durations = [end - start for start, end in windows]
    # from the first trial's start to the last one's end: process start-up (imports) excluded
    span = max(end for _, end in windows) - min(start for start, _ in windows)
    ideal = workers * 60 / OBJECTIVE_SECONDS
    per_minute = len(finished) / span * 60
    return {
        "storage": kind,
        "workers": workers,
        "target": trials,
        "finished": len(finished),
        # two workers may both start the last trial: the later one ends as surplus, untrained
        "surplus": sum(t.state == TrialState.FAIL and bool(t.user_attrs.get(ATTR_SURPLUS)) for t in all_trials),
        "failed": sum(t.state == TrialState.FAIL and not t.user_attrs.get(ATTR_SURPLUS) for t in all_trials),
        "duplicate_numbers": len(all_trials) - len({t.number for t in all_trials}),
        "elapsed_s": round(elapsed, 2),
        "trials_span_s": round(span, 2),
        "trials_per_minute": round(per_minute, 1),
        "ideal_per_minute": round(ideal, 1),
        "efficiency": round(per_minute / ideal, 3),
        # worker time per trial beyond the objective's own sleep: sampling, storage
        # reads and writes, and the coordination (counting, waiting at the end)
        "overhead_per_trial_s": round(span * workers / len(finished) - OBJECTIVE_SECONDS, 3),
        # inside a trial (objective called to trial told), beyond the sleep: suggest/report/attr writes, tell
        "in_trial_overhead_s": round(sum(durations) / max(1, len(durations)) - OBJECTIVE_SECONDS, 3),
        "errors": list(errors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    args = parser.parse_args(argv)
    worker_counts = [1, 2] if args.quick else [1, 2, 4]
    trials = 8 if args.quick else 48

    sys.path.insert(0, str(HERE.parent / "tests"))  # the throwaway database servers of the tests
    import mysql_server
    import postgres_cluster

    run = _common.Run("storage_workers", args.quick, {"workers": worker_counts, "trials": trials,
                                                      "objective_seconds": OBJECTIVE_SECONDS})
    rows: list[dict] = []
    notes: list[str] = []
    servers = []  # the database servers whose binaries are here, started for the run
    with _common.scratch_folder() as folder:
        if (postgres_cluster.POSTGRES_BIN / "initdb").exists():
            servers.append(postgres_cluster.PostgresCluster())
        else:
            notes.append(f"PostgreSQL skipped: {postgres_cluster.MISSING_BINARIES}")
        if mysql_server.MARIADB_SERVER.exists() and mysql_server.MARIADB_INSTALL_DB.exists():
            servers.append(mysql_server.MariaDBServer())
        else:
            notes.append(f"MariaDB skipped: {mysql_server.MISSING_BINARIES}")
        try:
            for server in servers:
                server.start()
            for workers in worker_counts:
                specs = [("sqlite", f"{folder}/w{workers}.db"), ("journal", f"{folder}/w{workers}.journal")]
                specs += [(server.scheme, server.create_database(f"bench_w{workers}")) for server in servers]
                for kind, spec in specs:
                    row = measure(kind, spec, workers, trials)
                    rows.append(row)
                    print(f"{kind:10s} workers={workers}  {row['finished']}/{trials} finished  "
                          f"{row['trials_per_minute']:6.1f}/min (ideal {row['ideal_per_minute']})  "
                          f"overhead {row['overhead_per_trial_s']:.3f} s/trial  errors {len(row['errors'])}",
                          file=sys.stderr, flush=True)
        finally:
            for server in servers:
                server.stop()

    for row in rows:
        row["finished_of_target"] = f"{row['finished']}/{row['target']}"
        row["efficiency_share"] = f"{row['efficiency']:.0%}"
        row["error_count"] = len(row["errors"])
    body = (
        f"Finished trials per minute, objective {OBJECTIVE_SECONDS} s per trial, {trials} trials per run; ideal = workers x 60 / "
        f"{OBJECTIVE_SECONDS}. Overhead = worker time per trial beyond the objective's sleep (sampling, storage, coordination); "
        "in-trial overhead = the part of it between a trial's start and its end.\n\n"
        + _common.markdown_table([("storage", "storage"), ("workers", "workers"), ("finished", "finished_of_target"),
                                  ("trials/min", "trials_per_minute"), ("ideal", "ideal_per_minute"),
                                  ("efficiency", "efficiency_share"), ("overhead s/trial", "overhead_per_trial_s"),
                                  ("in-trial overhead s", "in_trial_overhead_s"), ("surplus", "surplus"),
                                  ("failed", "failed"), ("errors", "error_count")], rows)
        + "".join(f"\n{note}\n" for note in notes)
    )
    _common.write(run.record(rows, {"notes": notes}), body, _common.results_folder(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
