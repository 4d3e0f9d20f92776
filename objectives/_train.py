"""Full training with a preset (not the proxy), and replaying one proxy trial."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from lora_search.spaces import TrainingConfig, first_line

from ._errors import InfeasibleConfigError, OutputError
from ._objective import LoraObjective
from ._tracking import TrackedRun, lora_params
from ._workload import Workload, metric_direction

# What the evaluations report of the Trainer's output: scores, not timings.
SCORES = ("loss", "accuracy", "f1", "perplexity")

# The settings of a training under way in an output folder ("settings"), so that the same
# command resumes it from its last checkpoint and another one does not mix in, and the ids of
# its tracked runs ("tracked_runs"), which the resumed training goes on with; gone once
# training.json is written.
IN_PROGRESS = "training-in-progress.json"


def train_with_preset(workload: Workload, config: TrainingConfig, output_dir: str | Path, *, fit_to_data: bool = False,
                      progress: bool = True, live: Any | None = None, tracked: TrackedRun | None = None) -> dict[str, Any]:
    """Train ``config`` on the whole training split, keep the best checkpoint, score it, save the adapter.

    The validation split picks the best checkpoint and stops early, so its score is
    the one the run was chosen on; the test split scores the kept checkpoint once at the
    end and is seen by nothing else (not the search either): its score is the one to
    compare. With ``fit_to_data``, the settings that follow from the training split's size
    and the hardware are first re-derived by the guide's rules (``rederive_for_dataset``,
    as ``export`` does for a winner); without, ``config`` trains as it is and the changes
    fitting would make are only reported.

    Writes ``output_dir/adapter`` (peft adapter + tokenizer, loadable with
    ``PeftModel.from_pretrained``), ``output_dir/checkpoints`` (Trainer checkpoints) and
    ``output_dir/training.json``, and returns what that file holds: workload, config,
    each split's size and origin, the fit (``fitted``: applied or not, the profile, and
    each setting it changes with both values and why), epochs trained, the batch as
    taken here (``batch``: per device, devices, accumulation, optimizer steps), and the metrics
    (``validation_*``, ``test_*``: loss, and accuracy and f1 or perplexity). With
    ``progress``, the fit's changes and then one line per evaluation go to stderr (as
    ``run`` writes one per trial); without, nothing is printed. ``live`` (with ``progress``),
    a terminal's live line: called after each optimizer step with the steps done, the steps
    planned and the best validation value so far in the workload's metric, and cleared
    (``live.clear()``) before each printed line.
    A ``tracked`` run (not yet open: it opens once the checkpoint to resume from is known)
    receives the Trainer's logs, then the LoRA settings, workload and final metrics; a resumed
    training goes on with its interrupted run where the tracker can (``TrackedRun.going_on_from``).

    Under ``torchrun`` or ``accelerate launch`` each process trains on its own device with
    DistributedDataParallel; all of them return the record, rank 0 alone prints and writes
    (the Trainer saves checkpoints from it too).

    An interrupted training resumes: the same workload and config into the same folder go
    on from its last complete checkpoint (optimizer, schedule, random state, early
    stopping's count and the best checkpoint so far included). ``OutputError`` before
    anything loads where the folder cannot be written or holds a finished training, and
    before training where it holds checkpoints of other settings.
    """
    import torch
    from transformers import EarlyStoppingCallback, set_seed

    from ._data import length_note, prepare_data, tokenize
    from ._model import attach_adapter, fit_base_to_gpu, load_base_model, load_tokenizer, training_device
    from ._hardware import data_parallel_width, distributed_launch
    from ._trainer import accumulation_here, build_trainer, perplexity

    launch = distributed_launch()
    writes = launch is None or launch.rank == 0
    progress = progress and writes
    output = Path(output_dir)
    claim_output_folder(output)
    workload, chosen = fit_base_to_gpu(workload)  # training.json records the base as it was loaded
    if chosen is not None and progress:
        print(chosen, file=sys.stderr)

    if workload.torch_threads is not None:
        torch.set_num_threads(workload.torch_threads)
    data = prepare_data(workload)
    if (blank := data.blank_rows_note()) is not None and progress:
        print(blank, file=sys.stderr)
    tokenizer = load_tokenizer(workload.model)
    device, base_precision = training_device()
    set_seed(workload.seed)
    model = load_base_model(workload.model, data.task, data.label_names, tokenizer, device, base_precision, workload.quantization)
    rows = {role: tokenize(data, frame, tokenizer, workload.max_length)
            for role, frame in (("train", data.train), ("validation", data.eval), ("test", data.test))}
    if progress and (cut := length_note(dict(zip(("training", "validation", "test"), rows.values())), workload.max_length)):
        print(cut, file=sys.stderr)
    fitted = _fit(config, workload, len(data.train), model.num_parameters())
    if fit_to_data:
        config = TrainingConfig.from_dict(fitted["config"])
    if progress:
        _print_fit(fitted, fit_to_data)
    resume = _resume_point(output, _settings(workload, config, rows), writes)
    if resume is not None and progress:
        print(f"resuming the interrupted training from {resume} (step {resume.name.rsplit('-', 1)[1]})", file=sys.stderr)
    set_seed(workload.seed)
    model = attach_adapter(model, config, data.task)
    early_stopping = config.early_stopping_kwargs()
    training_only = [_final_evaluation(), *([EarlyStoppingCallback(**early_stopping)] if early_stopping else [])]
    if progress:
        training_only.append(_evaluation_lines(workload.metric, live))
    if tracked is not None:
        training_only.extend(tracked.trainer_callbacks())
    # the config's effective batch spans this host's GPUs (a launch's processes); alone, a
    # quantized base, which the Trainer does not replicate over them, accumulates their passes on one
    parallel = data_parallel_width(device, workload.quantization)
    if progress and launch is None and parallel > 1:
        print(f"lora-search train: the Trainer spreads each batch over the {parallel} visible GPUs from this one process "
              f"(nn.DataParallel); torchrun --nproc-per-node {parallel} $(which lora-search) train ... trains with one "
              "process per GPU (DDP), which is faster", file=sys.stderr)
    here = config.replace(gradient_accumulation_steps=accumulation_here(config, fitted["profile"]["devices"], parallel))
    trainer = build_trainer(
        model,
        here,
        task=data.task,
        tokenizer=tokenizer,
        train_rows=rows["train"],
        eval_rows=rows["validation"],
        device=device,
        base_precision=base_precision,
        seed=workload.seed,
        output_dir=str(output / "checkpoints"),
        callbacks=training_only,
        # Trainer prefixes "eval_"; perplexity is exp(eval_loss), so the best loss is the best perplexity.
        metric_for_best_model={"eval_loss": "eval_loss", "perplexity": "eval_loss"}.get(workload.metric, workload.metric),
        greater_is_better=metric_direction(workload.metric) == "maximize",
        save_total_limit=2,  # the best checkpoint and the latest
        restore_callback_states_from_checkpoint=True,  # a resumed early stopping keeps its count
        run_name=tracked.name if tracked is not None else None,
    )
    if tracked is not None and resume is not None:
        tracked.going_on_from(_recorded_tracked_runs(output))
    with tracked if tracked is not None else contextlib.nullcontext():
        if tracked is not None and writes:
            _record_tracked_runs(output, tracked.ids())
        try:
            trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
        except (torch.OutOfMemoryError, MemoryError) as error:
            raise InfeasibleConfigError(
                f"out of memory training {config.per_device_train_batch_size} example(s) per device of up to {workload.max_length} tokens "
                f"({first_line(error)}): lower per_device_train_batch_size (more gradient_accumulation_steps keep the effective "
                "batch), turn on gradient_checkpointing, shorten --max-length or load the base with --quantize 4bit"
            ) from None
        # the final evaluations score the kept checkpoint: they stop and print nothing, and the
        # tracked run gets their scores as its final metrics (below), not as one more log. By
        # class: a resumed training's early stopping is a new instance, restored from the checkpoint.
        for callback in training_only:
            trainer.remove_callback(type(callback))
        metrics: dict[str, float] = {}
        for role in ("validation", "test"):
            scores = trainer.evaluate(rows[role], metric_key_prefix=role)
            if data.task == "causal-lm":
                scores[f"{role}_perplexity"] = perplexity(scores[f"{role}_loss"])
            metrics.update({f"{role}_{name}": float(scores[f"{role}_{name}"]) for name in SCORES if f"{role}_{name}" in scores})
        origins = {"train": data.source, "validation": data.eval_source, "test": data.test_source}
        record = {
            "workload": workload.to_dict(),
            "config": config.to_dict(),
            "splits": {role: {"examples": len(rows[role]), "source": origins[role]} for role in rows},
            "fitted": {"applied": fit_to_data, "profile": fitted["profile"], "changes": fitted["changes"]},
            "epochs": {"planned": config.num_train_epochs, "trained": trainer.state.epoch, "best_checkpoint": _best_epoch(trainer.state)},
            # how the config's effective batch was taken here: per device x devices x accumulation
            "batch": {"per_device": config.per_device_train_batch_size, "devices": parallel,
                      "accumulation": here.gradient_accumulation_steps,
                      "examples_per_step": config.per_device_train_batch_size * parallel * here.gradient_accumulation_steps,
                      "optimizer_steps": trainer.state.global_step},
            "metrics": metrics,
        }
        if writes:
            model.save_pretrained(output / "adapter")
            tokenizer.save_pretrained(output / "adapter")
            (output / "training.json").write_text(json.dumps(record, indent=2) + "\n")
            (output / IN_PROGRESS).unlink(missing_ok=True)
        if launch is not None:
            _leave_process_group()
        if tracked is not None:
            workload_params = {f"workload.{key}": value for key, value in record["workload"].items()}
            tracked.log(params=lora_params(config) | workload_params, metrics={**metrics, "epochs_trained": trainer.state.epoch})
        return record


def claim_output_folder(output: str | Path) -> None:
    """OutputError unless ``output`` can take a training: a folder that can be written (made
    if missing, by rank 0 of a launch) and holds no finished one. ``train_with_preset`` checks
    it first; a caller that says more before training (``train``'s tracking lines) checks it sooner."""
    from ._hardware import distributed_launch

    output = Path(output)
    if (output / "training.json").exists():
        raise OutputError(f"{output} holds a finished training (training.json): give another output folder, "
                          "or remove this one to train again")
    launch = distributed_launch()
    if launch is not None and launch.rank != 0:
        return
    try:
        output.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output).close()
    except OSError as error:
        raise OutputError(f"cannot write the output folder {output} ({error.strerror or error}): give a folder you can write to") from None


def _settings(workload: Workload, config: TrainingConfig, rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What decides a training's result, under dotted keys: the workload's (not its CPU
    threads) as ``workload.model``, the config's as ``learning_rate`` or ``lora.r``, and the
    rows it trains and chooses its checkpoint on as ``data.*`` (a data file edited between
    the interruption and the resumption differs there, its path being the same)."""
    import hashlib

    import numpy

    described = {f"workload.{key}": value for key, value in workload.to_dict().items() if key != "torch_threads"}
    digest = hashlib.sha256()
    for row in (*rows["train"], *rows["validation"]):
        for key in sorted(row):
            values = numpy.asarray(row[key], dtype=numpy.int64)
            digest.update(f"{key}:{values.size};".encode() + values.tobytes())
    data = {"data.train_rows": len(rows["train"]), "data.validation_rows": len(rows["validation"]),
            "data.token_digest": digest.hexdigest()[:16]}
    return {**described, **config.flat(), **data}


def _resume_point(output: Path, settings: dict[str, Any], writes: bool) -> Path | None:
    """The checkpoint to go on from where ``output`` holds an interrupted training of these
    ``settings``, or None to start afresh. Rank 0 (``writes``) records the settings of a
    fresh start, and refuses (OutputError) where the folder holds another training's
    checkpoints; one that stopped before its first checkpoint (out of memory at the first
    step, say) left nothing to keep, so other settings start afresh there. The other ranks
    follow rank 0."""
    checkpoints = sorted(_complete_checkpoints(output / "checkpoints"), key=lambda path: int(path.name.rsplit("-", 1)[1]))
    if not writes:
        return checkpoints[-1] if checkpoints else None
    settings = json.loads(json.dumps(settings))  # as the file holds them: lists, not tuples
    record = _read_in_progress(output)
    if record is not None:
        earlier = record["settings"]
        if earlier == settings:
            return checkpoints[-1] if checkpoints else None
        if checkpoints:
            raise OutputError(f"{output} holds an interrupted training of other settings ({_differences(earlier, settings)}): "
                              "give another output folder, or remove this one to start over")
    elif (output / "checkpoints").is_dir() and any((output / "checkpoints").iterdir()):
        missing = "is missing" if not (output / IN_PROGRESS).exists() else "cannot be read"
        raise OutputError(f"{output / 'checkpoints'} holds checkpoints of an unknown training ({IN_PROGRESS} {missing}): "
                          "give another output folder, or remove this one")
    _write_in_progress(output, {"settings": settings})
    return None


def _read_in_progress(output: Path) -> dict[str, Any] | None:
    """What ``output``'s IN_PROGRESS records, or None where it is missing or unreadable."""
    try:
        record = json.loads((output / IN_PROGRESS).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("settings"), dict) else None


def _write_in_progress(output: Path, record: dict[str, Any]) -> None:
    """Replace IN_PROGRESS whole: a training killed while writing it leaves the former one."""
    import os

    written = output / f".{IN_PROGRESS}.part"
    written.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(written, output / IN_PROGRESS)


def _recorded_tracked_runs(output: Path) -> dict[str, str]:
    """tracker -> the id of the interrupted training's run in it (``TrackedRun.ids``)."""
    return (_read_in_progress(output) or {}).get("tracked_runs", {})


def _record_tracked_runs(output: Path, ids: dict[str, str]) -> None:
    _write_in_progress(output, (_read_in_progress(output) or {}) | {"tracked_runs": ids})


def _complete_checkpoints(folder: Path) -> list[Path]:
    """The Trainer's checkpoints in ``folder`` that were written to the end: the Trainer
    writes trainer_state.json last, so a run stopped while saving leaves one without it."""
    if not folder.is_dir():
        return []
    complete = []
    for checkpoint in folder.glob("checkpoint-*"):
        if not checkpoint.name.rsplit("-", 1)[1].isdigit():
            continue
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        complete.append(checkpoint)
    return complete


def _differences(earlier: dict[str, Any], now: dict[str, Any]) -> str:
    """The first few settings that differ, as 'name earlier -> now'."""
    names = [name for name in sorted(earlier.keys() | now.keys()) if earlier.get(name) != now.get(name)]
    shown = ", ".join(f"{name} {earlier.get(name)} -> {now.get(name)}" for name in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _leave_process_group() -> None:
    """Wait until rank 0 has written its files: no process leaves before the training is
    saved. The process group stays open: closing it hung a gloo rank now and then, and
    leaving it open can abort at interpreter exit, so ``train`` ends a launched process
    with ``os._exit`` (``search/_cmd_train.py``)."""
    import torch.distributed

    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _fit(config: TrainingConfig, workload: Workload, dataset_size: int, model_parameters: int) -> dict[str, Any]:
    """``config`` fitted to this training split and machine: the fitted config, the profile
    it was fitted for, and for each setting that changes both values and the reason."""
    import dataclasses

    from lora_search.spaces import rederive_for_dataset

    from ._hardware import training_profile

    profile = training_profile(dataset_size, model_parameters, workload.quantization)
    full, reasons = rederive_for_dataset(config, profile)
    before, after = config.flat(), full.flat()
    changes = {key: {"preset": before[key], "fitted": after[key], "reason": reasons.get(key, "")}
               for key in after if before[key] != after[key]}
    return {"config": full.to_dict(), "profile": dataclasses.asdict(profile), "changes": changes}


def _print_fit(fitted: dict[str, Any], applied: bool) -> None:
    """The fit's changes on stderr before training: made, or (when not asked for) the hint."""
    changes = fitted["changes"]
    if not changes:
        return
    examples = f"{fitted['profile']['dataset_size']:,} training examples"
    if applied:
        print(f"fitted to the data ({examples}, {fitted['profile']['accelerator']}):", file=sys.stderr)
    else:
        print(f"note: the guide's rules for {examples} would change {len(changes)} setting(s) of this preset; "
              f"--fit-to-data applies them:", file=sys.stderr)
    for key, change in changes.items():
        print(f"  {key}: {change['preset']} -> {change['fitted']} ({change['reason']})", file=sys.stderr)


def _final_evaluation() -> Any:
    """A Trainer callback evaluating the last step of a step-evaluated run, so the final
    weights can be the kept checkpoint. transformers does so itself from 5.x releases
    after 5.0 (DefaultFlowCallback); 5.0 stops without it when eval_steps does not divide
    the run's steps (a 6-step run at eval_steps 100 would never be evaluated)."""
    from transformers import TrainerCallback

    class FinalEvaluation(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= state.max_steps and args.eval_strategy == "steps" and state.global_step % state.eval_steps:
                control.should_evaluate = True
                control.should_save = control.should_save or args.save_strategy == "steps"

    return FinalEvaluation()


def _evaluation_lines(metric: str, live: Any | None) -> Any:
    """A Trainer callback writing the run's plan, then one line per evaluation, to stderr,
    and keeping ``live`` (if any) on the best value of ``metric`` so far."""
    from transformers import TrainerCallback

    from ._trainer import evaluation_value

    maximize = metric_direction(metric) == "maximize"

    class EvaluationLines(TrainerCallback):
        best: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            cadence = "each epoch" if args.eval_strategy == "epoch" else f"every {args.eval_steps:g} steps"
            print(f"training {args.num_train_epochs:g} epochs, {state.max_steps:,} steps, evaluated {cadence}", file=sys.stderr, flush=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if live is not None:
                live(state.global_step, state.max_steps, self.best)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kwargs: Any) -> None:
            value = evaluation_value(metric, metrics)
            if self.best is None or (value > self.best if maximize else value < self.best):
                self.best = value
            if live is not None:
                live.clear()
            scores = ", ".join(f"{name} {metrics[f'eval_{name}']:.4g}" for name in SCORES if f"eval_{name}" in metrics)
            print(f"epoch {state.epoch:.2f} (step {state.global_step:,}): validation {scores}", file=sys.stderr, flush=True)

    return EvaluationLines()


def _best_epoch(state: Any) -> float | None:
    """The epoch of the kept checkpoint (None when no evaluation chose one)."""
    return next((entry["epoch"] for entry in state.log_history
                 if entry.get("step") == state.best_global_step and "eval_loss" in entry), None)


def replay(workload: Workload, config: TrainingConfig, *, objective: LoraObjective | None = None) -> float:
    """The proxy trial's value for ``config`` without a stored study.

    Deterministic on the CPU for a given workload (same seeds, same samples), so it
    checks that an exported preset reproduces its trial. Pass a loaded ``objective``
    to skip loading the model and data again. An infeasible config raises
    ``InfeasibleConfigError``.
    """
    import optuna

    objective = objective if objective is not None else LoraObjective(workload)
    study = optuna.create_study(direction=objective.direction, pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    value = objective(trial, config)
    reason = trial.user_attrs.get("stop_reason", "")
    if reason.startswith("infeasible"):
        raise InfeasibleConfigError(f"config is infeasible here ({reason}): {trial.user_attrs.get('infeasible_reason', '')}")
    return value
