"""Rungs on ``run --workers N``: a rung's configs spread over worker processes.

A rung is decided whole (``_rungs``), so the configs it trains do not depend on each other.
Each worker process owns a slot as for trials (one GPU, or a share of the CPU cores), loads
the base once, and trains the configs the parent hands it one at a time, answering each
with its result; the parent alone writes the study's rung record, so no two processes
rewrite that user attr at once. Before, the parent trained every rung itself, one config
after another on its own default device: the top rung's finalist and baseline took turns
on one GPU of many, and ``--devices 3`` trained the rungs on GPU 0.

The protocol is text lines. The parent writes the SearchPlan as JSON, then ``RUNG TRIAL``
for each config; the worker answers each with ``{"trial": N, "result": {...}}`` or
``{"trial": N, "error": "..."}`` on the stdout it started with (whatever else prints there
goes to stderr), and while training, about once a second, ``{"trial": N, "progress": [steps
done, steps planned, best value]}`` for the parent's live line. Closing its stdin ends it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

from ._loop import POLL_SECONDS, SearchPlan, interrupts_held, raise_if_terminated
from ._workers import WorkerSlot, describe_exit


@dataclass(frozen=True)
class RungOutcome:
    """One config's training at a rung: its result (``LoraObjective.train_at_rung``'s), or
    why it has none (``error``), and the device it trained on."""

    number: int
    result: dict[str, Any] | None
    error: str | None
    device: str


@dataclass
class _RungWorker:
    slot: WorkerSlot
    process: subprocess.Popen
    pending: bytes = b""  # answer bytes read but not yet a whole line


class RungWorkers:
    """Worker processes for the rungs, started as a rung first needs them (no more than
    it has configs) and kept for the rungs above; ``with`` ends them however the run ends."""

    def __init__(self, plan: SearchPlan, slots: list[WorkerSlot]) -> None:
        self.plan = plan
        self.slots = slots
        self._workers: list[_RungWorker] = []

    def __enter__(self) -> RungWorkers:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        interrupted = exc_info[0] is not None
        for worker in self._workers:
            if worker.process.poll() is None:
                if interrupted:  # a config in training stops; its result was never stored
                    worker.process.send_signal(signal.SIGTERM)
                else:
                    with contextlib.suppress(BrokenPipeError):
                        worker.process.stdin.close()
        for worker in self._workers:
            try:
                worker.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self._workers = []

    @property
    def size(self) -> int:
        return len(self.slots)

    def train(self, rung: int, numbers: list[int],
              on_progress: Callable[[dict[int, tuple[int, int, float | None]]], None] | None = None,
              deadline: float | None = None) -> Iterator[RungOutcome]:
        """Train ``numbers`` at ``rung``, as many at once as there are slots, yielding each
        outcome as it comes. After an error, or once ``deadline`` (a ``time.time()``) has
        passed, no config starts; those in training finish.
        ``on_progress`` gets, about once a second per worker, each config's optimizer steps
        done, steps planned and best value so far, by trial number (a finished one with all
        its steps done)."""
        queue = list(numbers)
        held = {worker.slot.worker_id for worker in self._workers}
        for slot in [slot for slot in self.slots if slot.worker_id not in held][: max(0, len(queue) - len(self._workers))]:
            self._start(slot)
        busy: dict[int, int] = {}  # fd of a worker's answers -> the trial it trains
        progress: dict[int, tuple[int, int, float | None]] = {}
        by_fd = {worker.process.stdout.fileno(): worker for worker in self._workers}
        stopped = False
        while busy or (queue and not stopped):
            stopped = stopped or (deadline is not None and time.time() >= deadline)
            for fd, worker in list(by_fd.items()):
                if not queue or stopped or fd in busy:
                    continue
                number = queue.pop(0)
                try:
                    worker.process.stdin.write(f"{rung} {number}\n")
                    worker.process.stdin.flush()
                except BrokenPipeError:  # it died while idle: the config it was handed has no result
                    del by_fd[fd]
                    stopped = True
                    yield self._lost(worker, number)
                    continue
                busy[fd] = number
            if not busy:
                break
            readable, _, _ = select.select(list(busy), [], [], POLL_SECONDS)
            raise_if_terminated()
            for fd in readable:
                worker = by_fd[fd]
                chunk = os.read(fd, 65536)
                if not chunk:  # the worker died (OOM killer, a crash): its config has no result
                    number = busy.pop(fd)
                    progress.pop(number, None)
                    del by_fd[fd]
                    stopped = True
                    yield self._lost(worker, number)
                    continue
                worker.pending += chunk
                while b"\n" in worker.pending:
                    line, worker.pending = worker.pending.split(b"\n", 1)
                    answer = json.loads(line)
                    if "progress" in answer:
                        progress[answer["trial"]] = tuple(answer["progress"])
                        if on_progress is not None:
                            on_progress(progress)
                        continue
                    busy.pop(fd)
                    if answer["trial"] in progress:  # its steps stay in the rung's count, all done
                        _, total, best = progress[answer["trial"]]
                        progress[answer["trial"]] = (total, total, best)
                    stopped = stopped or answer.get("error") is not None
                    yield RungOutcome(answer["trial"], answer.get("result"), answer.get("error"), worker.slot.device)

    def _lost(self, worker: _RungWorker, number: int) -> RungOutcome:
        """The outcome of config ``number``, which ``worker`` held when it died; it leaves the pool."""
        self._workers.remove(worker)
        return RungOutcome(number, None, f"the worker process ended ({describe_exit(worker.process.wait())})", worker.slot.device)

    def _start(self, slot: WorkerSlot) -> None:
        worker_plan = dataclasses.replace(self.plan, workload={**self.plan.workload, "torch_threads": slot.torch_threads})
        with interrupts_held():  # an interrupt finds the worker tracked: __exit__ ends it
            process = subprocess.Popen(
                [sys.executable, "-m", "lora_search._worker_main", "rungs"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, **slot.env},
                text=True,
            )
            self._workers.append(_RungWorker(slot, process))
            with contextlib.suppress(BrokenPipeError):  # dead at once: handing it a config says so (train)
                process.stdin.write(json.dumps(dataclasses.asdict(worker_plan)) + "\n")  # a few kB: the pipe holds it
                process.stdin.flush()


def serve_rungs(plan: SearchPlan, answers: TextIO) -> None:
    """The worker's side: read ``RUNG TRIAL`` lines from stdin until it closes, train each
    config as the parent would (``full_run_config``), answer on ``answers``."""
    from ._study import full_run_config
    from ._trials import plain
    from .objectives import LoraObjective, Tracking, Workload, quiet_libraries
    from .spaces import RunProfile, first_line, load_space

    quiet_libraries()
    objective = LoraObjective(Workload.from_dict(plan.workload), Tracking(**plan.tracking) if plan.tracking else None,
                              config_devices=plan.profile["devices"])
    resolved = load_space(plan.space, plan.space_yaml).resolve(RunProfile(**plan.profile))
    trials = plan.open_study().get_trials(deepcopy=False)  # finished before any rung: they no longer change
    for line in sys.stdin:
        rung, number = map(int, line.split())
        try:
            result = objective.train_at_rung(full_run_config(resolved, trials[number])[0], rung, plan.study_name, number,
                                             on_progress=_ProgressAnswers(answers, number))
            answer: dict[str, Any] = {"trial": number, "result": plain(result)}
        except Exception as error:  # nothing is stored: the next run trains it again
            answer = {"trial": number, "error": f"{type(error).__name__}: {first_line(error)}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


class _ProgressAnswers:
    """``train_at_rung``'s ``on_progress`` in a worker: the steps done, the steps planned and
    the best value so far, answered at most once a second (the parent's live line)."""

    def __init__(self, answers: TextIO, number: int) -> None:
        self.answers = answers
        self.number = number
        self.sent: float | None = None

    def __call__(self, done: int, total: int, best: float | None) -> None:
        now = time.monotonic()
        if self.sent is not None and now - self.sent < 1.0:
            return
        self.sent = now
        self.answers.write(json.dumps({"trial": self.number, "progress": [done, total, best]}) + "\n")
        self.answers.flush()


__all__ = ["RungOutcome", "RungWorkers", "serve_rungs"]
