"""Experiment trackers (MLflow, TensorBoard, Weights & Biases): one tracked run per training.

transformers' own integrations (its MLflowCallback, TensorBoardCallback and WandbCallback)
log what a training logs: the TrainingArguments, the training loss and every evaluation.
``TrackedRun`` opens the run they log into, so that it is named, grouped and stored
where asked, adds what the Trainer does not know (search parameters, LoRA settings,
derived values, the final value) and closes it. optuna-integration's tracker callbacks
are not used: they open a run of their own per trial (a second run beside the
Trainer's) and are deprecated since optuna-integration 4.9.

Where each tracker writes unless its own variable says otherwise (``Tracking.folder``):

- MLflow: ``file:FOLDER/mlruns`` (``MLFLOW_TRACKING_URI``), one experiment per group;
- TensorBoard: ``FOLDER/tensorboard/GROUP/RUN`` (``TENSORBOARD_LOGGING_DIR`` replaces
  ``FOLDER/tensorboard``);
- W&B: ``FOLDER/wandb`` (``WANDB_DIR``), offline unless ``WANDB_MODE`` says otherwise (or
  only ``WANDB_API_KEY`` is set: online), project ``lora-search`` (``WANDB_PROJECT``), one
  W&B group per group.

The trackers' packages are optional (``pip install 'lora-search[track]'``) and imported
only when a run starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lora_search.spaces import TrainingConfig

# tracker -> (module it needs, the package that provides it)
TRACKER_PACKAGES = {"mlflow": ("mlflow", "mlflow-skinny"), "tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
TRACKERS = tuple(TRACKER_PACKAGES)


def missing_packages(report_to: Sequence[str]) -> dict[str, str]:
    """tracker -> the package to install, for each of ``report_to`` that cannot be imported here."""
    import importlib.util

    missing = {}
    for tracker in report_to:
        module, package = TRACKER_PACKAGES[tracker]
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            missing[tracker] = package
    return missing


@dataclass(frozen=True)
class Tracking:
    """The trackers every training reports to, and the folder their files go to by default."""

    report_to: tuple[str, ...]
    folder: str

    def __post_init__(self) -> None:
        unknown = [name for name in self.report_to if name not in TRACKERS]
        if unknown:
            raise ValueError(f"unknown tracker {unknown[0]!r}: choose from {', '.join(TRACKERS)}")
        object.__setattr__(self, "report_to", tuple(dict.fromkeys(self.report_to)))
        object.__setattr__(self, "folder", str(Path(self.folder).expanduser().resolve()))

    def prepare(self, group: str) -> list[str]:
        """Create what the group's runs share (the MLflow experiment: before worker processes
        would race to) and say, one line per tracker, where it writes and how to view it."""
        return [_BACKENDS[tracker](self, group, name=group).prepare() for tracker in self.report_to]

    def run(self, group: str, leaf: str) -> TrackedRun:
        """The tracked run ``GROUP/LEAF`` (e.g. ``study/trial-3``), to open with ``with``."""
        return TrackedRun(self, group, leaf)


class TrackedRun:
    """One run in each tracker of a ``Tracking``; ``trainer_callbacks`` log a training into it.

    A context manager: the run ends with the block, as failed if it raised (a pruned
    trial is finished) and killed if it was interrupted.
    """

    def __init__(self, tracking: Tracking, group: str, leaf: str) -> None:
        self.name = f"{group}/{leaf}"
        self._backends = {tracker: _BACKENDS[tracker](tracking, group, self.name) for tracker in tracking.report_to}
        self._earlier: dict[str, str] = {}
        self._started: list[Any] = []

    def going_on_from(self, earlier: dict[str, str]) -> TrackedRun:
        """This run, opened as the continuation of an earlier one (its ``ids()``: a resumed
        training) where the tracker can: MLflow reopens the run (a new one where its store
        no longer holds it), W&B online resumes it (offline it cannot: a new run of the same
        name), TensorBoard writes into the same folder in any case."""
        self._earlier = dict(earlier)
        return self

    def ids(self) -> dict[str, str]:
        """tracker -> the id of this run in it, for the trackers that have one (not TensorBoard)."""
        return {tracker: backend.run_id for tracker, backend in self._backends.items() if backend.run_id is not None}

    def __enter__(self) -> TrackedRun:
        try:
            for tracker, backend in self._backends.items():
                backend.start(self._earlier.get(tracker))
                self._started.append(backend)
        except BaseException:
            self._end("failed")
            raise
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        self._end(_status(error))

    def trainer_callbacks(self) -> list[Any]:
        """transformers' integrations, logging the training into this run (Trainer ``callbacks``)."""
        return [backend.trainer_callback() for backend in self._backends.values()]

    def log(self, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
            texts: dict[str, str] | None = None) -> None:
        """Settings (``params``), final numbers (``metrics``) and documents (``texts``)."""
        params = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
                  for key, value in (params or {}).items() if value is not None}
        for backend in self._backends.values():
            backend.log(params, dict(metrics or {}), dict(texts or {}))

    def _end(self, status: str) -> None:
        while self._started:
            self._started.pop().end(status)


def _status(error: BaseException | None) -> str:
    if error is None:
        return "finished"
    if isinstance(error, KeyboardInterrupt):
        return "killed"
    import optuna

    return "finished" if isinstance(error, optuna.TrialPruned) else "failed"


def lora_params(config: TrainingConfig) -> dict[str, Any]:
    """The LoRA settings, which are not TrainingArguments (the integrations log those)."""
    return {f"lora.{key}": value for key, value in config.to_dict()["lora"].items()}


def trial_record(trial: Any, config: TrainingConfig, value: float | None) -> dict[str, Any]:
    """What a trial's run holds beside the Trainer's logs (``TrackedRun.log`` arguments):
    the sampled parameters (``search.*``) and LoRA settings, its user attributes (numbers
    as metrics, the rest as params; not the evaluations, which the Trainer logged) and
    its value."""
    params = {f"search.{key}": value for key, value in trial.params.items()} | lora_params(config)
    metrics = {} if value is None else {"value": value}
    for key, attr in _flat(trial.user_attrs).items():
        if key == "evaluations":
            continue
        if isinstance(attr, (int, float)) and not isinstance(attr, bool):
            metrics[key] = attr
        else:
            params[key] = attr
    return {"params": params, "metrics": metrics}


def rung_result_record(trial_number: int, rung: int, config: TrainingConfig, result: dict[str, Any]) -> dict[str, Any]:
    """What a rung's run holds beside the Trainer's logs: the trial and rung, the LoRA settings,
    how it stopped, and its numbers (``LoraObjective.train_at_rung``'s result) as metrics."""
    params = {"trial": trial_number, "rung": rung, "stop_reason": result["stop_reason"]} | lora_params(config)
    metrics = {key: result[key] for key in ("value", "examples_seen", "seconds", "best_step") if result.get(key) is not None}
    return {"params": params, "metrics": metrics}


def _flat(attrs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``memory_estimate_gb.total``."""
    flat: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- one class per tracker: prepare, start, run_id, trainer_callback, log, end -------------


class _MLflow:
    def __init__(self, tracking: Tracking, group: str, name: str) -> None:
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or Path(tracking.folder, "mlruns").as_uri()
        self.group, self.name = group, name
        self.run_id: str | None = None

    def _client(self) -> Any:
        import logging

        import mlflow

        # MLflow 3 keeps its file store only for those who opt in; an explicit choice wins
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "creating a new experiment"
        mlflow.set_tracking_uri(self.uri)
        return mlflow

    def prepare(self) -> str:
        import re

        self._client().set_experiment(self.group)
        if self.uri.startswith(("http://", "https://")):
            view = f"open {self.uri}"
        else:  # the file store (file: or a bare path) needs the opt-in of MLflow 3 in the UI too
            opt_in = "MLFLOW_ALLOW_FILE_STORE=true " if re.match(r"^(file:|[^:]*$)", self.uri) else ""
            view = f"{opt_in}mlflow ui --backend-store-uri {self.uri}"
        return f"mlflow: experiment {self.group!r} in {self.uri} (view: {view})"

    def start(self, earlier: str | None) -> None:
        from mlflow.exceptions import MlflowException

        mlflow = self._client()
        try:
            run = None if earlier is None else mlflow.start_run(run_id=earlier)
        except MlflowException:  # not in this store (MLFLOW_TRACKING_URI changed, say)
            run = None
        if run is None:
            run = mlflow.start_run(run_name=self.name, experiment_id=mlflow.set_experiment(self.group).experiment_id)
        self.run_id = run.info.run_id

    def trainer_callback(self) -> Any:
        from transformers.integrations import MLflowCallback

        class SynchronousMLflowCallback(MLflowCallback):
            """Trainer's MLflowCallback, logging into the active run (which it leaves open)
            without its background writer. With mlflow >= 2.8 it logs metrics asynchronously,
            and every log_metrics of mlflow 3.0 to 3.4 at least (and our log_text) first reads the whole
            run back; on the file store a metric file the writer has opened but not yet
            written then reads as "Metric 'eval_f1' is malformed" and fails the trial. A
            training logs a few dozen times, so waiting for each write costs nothing."""

            def setup(self, *args: Any, **kwargs: Any) -> None:
                super().setup(*args, **kwargs)
                self._async_log = False

        return SynchronousMLflowCallback()

    def log(self, params: dict[str, Any], metrics: dict[str, float], texts: dict[str, str]) -> None:
        import mlflow
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        mlflow.log_params({key: str(value)[:MAX_PARAM_VAL_LENGTH] for key, value in params.items()})
        mlflow.log_metrics(metrics)
        for key, text in texts.items():
            mlflow.log_text(text, f"{key}.txt")

    def end(self, status: str) -> None:
        import mlflow

        mlflow.end_run(status=status.upper())


class _TensorBoard:
    def __init__(self, tracking: Tracking, group: str, name: str) -> None:
        self.root = Path(os.environ.get("TENSORBOARD_LOGGING_DIR") or Path(tracking.folder, "tensorboard")).expanduser().resolve()
        self.group, self.folder = group, self.root / name
        self.run_id = None  # a run is its folder
        self._callback: Any = None

    def prepare(self) -> str:
        return f"tensorboard: {self.root / self.group} (view: tensorboard --logdir {self.root / self.group})"

    def start(self, earlier: str | None) -> None:
        pass  # event files are written by the first callback or log, into the same folder when resumed

    def trainer_callback(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        # given its writer: where the callback would put one differs between transformers releases
        self._callback = TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(self.folder)))
        return self._callback

    def log(self, params: dict[str, Any], metrics: dict[str, float], texts: dict[str, str]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        with SummaryWriter(log_dir=str(self.folder)) as writer:
            if params:  # one row of the HPARAMS tab, whose columns are the metrics' scalars below
                for summary in hparams(params, metrics):
                    writer.file_writer.add_summary(summary)
            for key, value in metrics.items():
                writer.add_scalar(key, value, 0)
            for key, text in texts.items():
                writer.add_text(key, "\n".join(f"    {line}" for line in text.splitlines()))  # Markdown code

    def end(self, status: str) -> None:
        if self._callback is not None and self._callback.tb_writer is not None:  # training never ended
            self._callback.tb_writer.close()


class _Wandb:
    def __init__(self, tracking: Tracking, group: str, name: str) -> None:
        self.folder = Path(os.environ.get("WANDB_DIR") or tracking.folder).expanduser().resolve()
        self.mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.project = os.environ.get("WANDB_PROJECT", "lora-search")
        self.group, self.name = group, name
        self.run_id: str | None = None
        self._run: Any = None

    def prepare(self) -> str:
        where = f"project {self.project!r}, group {self.group!r}"
        if self.mode not in ("offline", "dryrun"):
            return f"wandb: {where} (mode {self.mode})"
        runs = self.folder / "wandb"
        return f"wandb: offline runs in {runs}, {where} (upload: wandb sync {runs}/offline-run-*)"

    def start(self, earlier: str | None) -> None:
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        # W&B resumes online runs only: offline runs of one id upload as one run whose
        # history is the last one synced (wandb/wandb#3841), so offline a resumed training is a new run
        online = self.mode not in ("offline", "dryrun", "disabled")
        going_on = {"id": earlier, "resume": "allow"} if online and earlier is not None else {}
        self._run = wandb.init(
            project=self.project,
            group=self.group,
            name=self.name,
            dir=str(self.folder),
            # quiet: no banner, no capture of the terminal (the progress lines), no git lookup
            mode=self.mode,
            settings=wandb.Settings(silent=True, console="off", disable_git=True),
            **going_on,
        )
        self.run_id = self._run.id

    def trainer_callback(self) -> Any:
        from transformers.integrations import WandbCallback

        return WandbCallback()  # logs into the active run (wandb.run), which it leaves open

    def log(self, params: dict[str, Any], metrics: dict[str, float], texts: dict[str, str]) -> None:
        self._run.config.update(params, allow_val_change=True)
        self._run.summary.update({**metrics, **texts})

    def end(self, status: str) -> None:
        self._run.finish(exit_code=0 if status == "finished" else 1)


_BACKENDS = {"mlflow": _MLflow, "tensorboard": _TensorBoard, "wandb": _Wandb}
