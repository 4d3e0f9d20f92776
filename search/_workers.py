"""``run --workers N``: N processes running the trial loop (``_loop``, whose rules keep
them consistent) on one study, and the parent watching it. With GPUs each worker owns
one (``CUDA_VISIBLE_DEVICES``); on CPU the cores are split between the workers (two
one-thread workers beat one two-thread one). SIGTERM is turned into KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ._errors import WorkerError
from ._loop import (ENV_DEVICE, ENV_WORKER_ID, POLL_SECONDS, TERMINATION_REQUESTED, SearchPlan, interrupts_held,
                    raise_if_terminated, reclaim_dead_trials)

# Worker i samples with the plan's seed + i x this (resumed runs offset the seed by the
# study's length, which stays far below it), so no two workers draw alike.
WORKER_SEED_STRIDE = 100_003

# Exit codes of a worker process (the parent turns them into the run's outcome).
EXIT_DONE = 0
EXIT_USER_ERROR = 2
EXIT_FAILURES = 3
EXIT_INTERRUPTED = 130


# --- who and where ----------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process: its number, the device it owns and its share of the CPU."""

    worker_id: int
    device: str  # "cpu" or "cuda:N" (N: the physical GPU index)
    torch_threads: int
    env: dict[str, str]  # set in the worker's environment before torch is imported


def parse_devices(text: str) -> list[int]:
    """``"0,1,3"`` -> ``[0, 1, 3]``; WorkerError for anything else."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise WorkerError(f"--devices {text!r} is not a list of GPU numbers: write e.g. --devices 0,1,3")
    devices = [int(part) for part in parts]
    if len(set(devices)) != len(devices):
        raise WorkerError(f"--devices {text!r} names a GPU twice: each worker owns one GPU")
    return devices


def plan_workers(workers: int, *, accelerator: str, gpu_count: int, cpu_cores: int,
                 devices: list[int] | None = None, visible: str | None = None) -> list[WorkerSlot]:
    """Assign devices and threads to ``workers`` processes (pure: no hardware is probed).

    GPUs: worker i owns the i-th GPU of ``devices`` (default: all ``gpu_count``), which
    it sees as its only GPU; more workers than GPUs is an error, since two trials on one
    GPU fight over its memory. CPU: each worker gets ``cpu_cores // workers`` threads
    (at least 1); more workers than cores still runs, one thread each.

    GPUs are numbered as torch numbers them in this process: within ``visible``, this
    process's own ``CUDA_VISIBLE_DEVICES`` where it has one (a scheduler's "4,5" makes GPU
    0 the physical 4), so a worker's ``CUDA_VISIBLE_DEVICES`` is that list's entry.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise WorkerError(f"--workers must be a whole number >= 1, got {workers!r}")
    if accelerator == "cuda":
        chosen = list(range(gpu_count)) if devices is None else devices
        missing = [d for d in chosen if d >= gpu_count]
        if missing:
            raise WorkerError(
                f"--devices names GPU {missing[0]}, but this host has {gpu_count} (numbered 0 to {gpu_count - 1})"
            )
        if workers > len(chosen):
            raise WorkerError(
                f"--workers {workers} needs {workers} GPUs (one per worker), but {len(chosen)} "
                f"{'is' if len(chosen) == 1 else 'are'} available ({','.join(map(str, chosen))}): "
                f"lower --workers or list more --devices"
            )
        # a GPU worker needs few CPU threads (data loading, the optimizer's bookkeeping)
        threads = max(1, cpu_cores // workers)
        entries = [entry.strip() for entry in visible.split(",")] if visible else None
        return [
            WorkerSlot(i, f"cuda:{gpu}", threads, {"CUDA_VISIBLE_DEVICES": entries[gpu] if entries else str(gpu),
                                                   ENV_WORKER_ID: str(i), ENV_DEVICE: f"cuda:{gpu}"})
            for i, gpu in enumerate(chosen[:workers])
        ]
    if devices is not None:
        raise WorkerError("--devices lists GPUs, but no CUDA GPU was found on this host: drop --devices")
    threads = max(1, cpu_cores // workers)  # 2 cores / 2 workers = 1 thread each
    return [
        WorkerSlot(i, "cpu", threads, {ENV_WORKER_ID: str(i), ENV_DEVICE: "cpu", "OMP_NUM_THREADS": str(threads)})
        for i in range(workers)
    ]


def local_slots(workers: int, devices: str | None) -> list[WorkerSlot]:
    """plan_workers for this host's hardware."""
    from .objectives import detect_hardware

    hardware = detect_hardware()
    cpu_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return plan_workers(
        workers,
        accelerator=hardware["accelerator"],
        gpu_count=hardware["devices"] if hardware["accelerator"] == "cuda" else 0,
        cpu_cores=cpu_cores,
        devices=parse_devices(devices) if devices is not None else None,
        visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's stop) ends the run like Ctrl-C does."""

    def interrupt(signum: int, frame: Any) -> None:
        # a second SIGTERM (e.g. the parent forwarding one) must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        TERMINATION_REQUESTED.set()
        raise KeyboardInterrupt

    def drop_swallowed_interrupt(unraisable: Any) -> None:
        # raised inside a __del__ and swallowed: TERMINATION_REQUESTED carries it instead
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)

    TERMINATION_REQUESTED.clear()
    previous, previous_hook = signal.signal(signal.SIGTERM, interrupt), sys.unraisablehook
    sys.unraisablehook = drop_swallowed_interrupt
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook
        TERMINATION_REQUESTED.clear()


# --- worker processes ---------------------------------------------------------------


@dataclass
class _Worker:
    slot: WorkerSlot
    process: subprocess.Popen
    returncode: int | None = None


def run_worker_processes(plan: SearchPlan, slots: list[WorkerSlot], *,
                         on_trial: Callable[..., None] | None = None) -> str:
    """Start one process per slot on the plan's study and watch the study until they end.

    ``on_trial(study, frozen_trial)`` is called for each trial that ends while watching
    (whichever worker ran it): progress for the whole study, not per worker. Returns why
    the run stopped: "target", "timeout" or "interrupted"; raises WorkerError when
    workers failed in a way the user must look at.
    """
    from ._trials import count_states

    study = plan.open_study()
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    workers: list[_Worker] = []
    interrupted = False
    try:
        with sigterm_as_interrupt():
            for slot in slots:
                worker_plan = dataclasses.replace(
                    plan,
                    workload={**plan.workload, "torch_threads": slot.torch_threads},
                    # one seed for all would make the workers propose the same parameters
                    sampler_seed=plan.sampler_seed + WORKER_SEED_STRIDE * slot.worker_id,
                )
                with interrupts_held():
                    process = subprocess.Popen(
                        [sys.executable, "-m", "lora_search._worker_main"],
                        stdin=subprocess.PIPE,
                        env={**os.environ, **slot.env},
                        text=True,
                    )
                    workers.append(_Worker(slot, process))
                    assert process.stdin is not None
                    process.stdin.write(json.dumps(dataclasses.asdict(worker_plan)))  # a few kB: the pipe holds it
                    process.stdin.close()
            while any(w.returncode is None for w in workers):
                for worker in workers:
                    if worker.returncode is None:
                        worker.returncode = worker.process.poll()
                reclaim_dead_trials(study)  # a worker killed mid-trial: its trial goes back to the queue
                for trial in study.get_trials(deepcopy=False):
                    if trial.state.is_finished() and trial.number not in seen:
                        seen.add(trial.number)
                        if on_trial is not None:
                            on_trial(study, trial)
                time.sleep(POLL_SECONDS / 2)
                raise_if_terminated()
    except KeyboardInterrupt:
        interrupted = True
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.returncode = worker.process.wait()
        reclaim_dead_trials(study)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
    codes = [w.returncode for w in workers]
    if interrupted or EXIT_INTERRUPTED in codes:
        return "interrupted"
    if EXIT_USER_ERROR in codes or EXIT_FAILURES in codes:
        raise WorkerError(
            f"worker processes ended with errors (exit codes {', '.join(map(str, codes))}); "
            "their messages are above"
        )
    counts = count_states(study.get_trials(deepcopy=False))
    if counts.finished >= plan.target:
        return "target"
    if plan.deadline is not None and time.time() >= plan.deadline:
        return "timeout"
    killed = [f"worker {w.slot.worker_id} ({describe_exit(w.returncode)})" for w in workers if w.returncode != EXIT_DONE]
    raise WorkerError(
        f"the workers stopped with {counts.finished}/{plan.target} trials finished"
        + (f": {', '.join(killed)}" if killed else "")
        + "; run the same command again to resume"
    )


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
