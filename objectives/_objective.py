"""One Optuna trial = one brief LoRA fine-tuning run on a fixed sample of the data."""

from __future__ import annotations

import copy
import gc
import math
import tempfile
import time
from typing import Any

from lora_search.spaces import PEFT_TASK_TYPES

from ._data import prepare_data, tokenize
from ._errors import DataError
from ._memory import estimate_training_memory_gb
from ._model import load_base_model, load_tokenizer
from ._schedule import ProxySchedule
from ._workload import Workload, metric_direction

# Evaluation batch: no gradients are kept, so it can be larger than training batches.
EVAL_BATCH_SIZE = 64
# Constraint keys every finished trial sets (GPSampler needs the same keys on all trials).
MEMORY_CONSTRAINT = "memory"
FINITE_LOSS_CONSTRAINT = "finite_loss"
# The user attr "stop_reason" of every trial is one of these.
STOP_REASONS = (
    "completed",
    "pruned",
    "early-stopped",
    "infeasible:oom",
    "infeasible:nan",
    "infeasible:over-budget",
    "failed",
)


class LoraObjective:
    """Loads the model and tokenized data once; each call trains one proxy trial.

    ``objective(trial, config)`` returns the best evaluation's metric, raises
    ``optuna.TrialPruned`` when the pruner stops it, and ends infeasible trials
    (out of memory, non-finite loss, over the memory budget) as COMPLETE with a
    positive constraint so samplers learn to avoid them. Any other exception
    propagates after the trial's error is recorded and the process is clean for the
    next trial: run the study with ``catch=(Exception,)``.
    """

    def __init__(self, workload: Workload) -> None:
        import torch
        from transformers import set_seed

        self.workload = workload
        if workload.torch_threads is not None:
            torch.set_num_threads(workload.torch_threads)
        self.data = prepare_data(workload)
        self.task = self.data.task
        self.direction = metric_direction(workload.metric)
        self.dataset_size = len(self.data.train)
        self.tokenizer = load_tokenizer(workload.model)
        set_seed(workload.seed)  # the classification head is initialised here, the same in every process
        self.base_model = load_base_model(workload.model, self.task, self.data.label_names, self.tokenizer)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.train_rows = tokenize(self.data, self.data.sample("train", workload.train_sample, workload.seed), self.tokenizer, workload.max_length)
        self.eval_rows = tokenize(self.data, self.data.sample("eval", workload.eval_sample, workload.seed), self.tokenizer, workload.max_length)
        if not self.train_rows or not self.eval_rows:
            raise DataError(f"{self.data.source}: no usable examples after tokenization; check the text columns")
        self._output_dir = tempfile.TemporaryDirectory(prefix="lora-search-trial-")
        self._untrained_value: float | None = None

    # -- the public surface -------------------------------------------------------
    def schedule(self, config: Any) -> ProxySchedule:
        """The proxy run of ``config``: its evaluation grid and planned steps."""
        return ProxySchedule.plan(
            len(self.train_rows),
            config.num_train_epochs,
            config.per_device_train_batch_size,
            config.gradient_accumulation_steps,
            self.workload.evaluations_per_trial,
        )

    def report_steps(self, config: Any) -> list[int]:
        """The steps (training examples seen) at which ``config``'s trial reports to Optuna."""
        return self.schedule(config).report_steps()

    def __call__(self, trial: Any, config: Any) -> float:
        import optuna
        import torch

        from ._callback import NonFiniteLossError, ProxyTrialCallback, TrainingWatch

        started = time.perf_counter()
        workload = self.workload
        schedule = self.schedule(config)
        precision = self._precision(config.precision)
        trial.set_user_attr("seed", workload.seed)
        trial.set_user_attr("proxy.train_examples", len(self.train_rows))
        trial.set_user_attr("proxy.eval_examples", len(self.eval_rows))
        trial.set_user_attr("proxy.epochs", config.num_train_epochs)
        trial.set_user_attr("proxy.optimizer_steps", schedule.optimizer_steps)
        trial.set_user_attr("proxy.report_interval_examples", schedule.interval)
        trial.set_user_attr("proxy.report_steps", schedule.report_steps())
        trial.set_user_attr("proxy.precision", precision)

        model = self._fresh_model()
        trainer = None
        watch = TrainingWatch()
        callback = None
        failure: tuple[str, str] | None = None
        train_seconds = 0.0
        optimizer_steps = 0
        try:
            model = self._with_adapter(model, config)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            trial.set_user_attr("trainable_parameters", trainable)
            estimate = estimate_training_memory_gb(model, trainable, config, workload.max_length, self.task)
            trial.set_user_attr("memory_estimate_gb", estimate)
            budget_use = estimate["total"] / workload.memory_budget_gb - 1 if workload.memory_budget_gb else 0.0
            if budget_use > 0:
                failure = ("infeasible:over-budget", f"estimated {estimate['total']:.2f} GB exceeds the {workload.memory_budget_gb} GB budget")
            else:
                watch.attach(model)
                callback = ProxyTrialCallback(
                    trial,
                    schedule,
                    watch,
                    self._read_value,
                    maximize=self.direction == "maximize",
                    patience=config.early_stopping_patience,
                    threshold=config.early_stopping_threshold,
                )
                trainer = self._trainer(model, config, precision, callbacks=[callback])
                memory_before = _memory_before(self.device)
                setup_seconds = time.perf_counter() - started
                train_started = time.perf_counter()
                try:
                    trainer.train()
                except torch.OutOfMemoryError as error:
                    failure = ("infeasible:oom", _first_line(error))
                except MemoryError as error:
                    failure = ("infeasible:oom", _first_line(error) or "MemoryError")
                except NonFiniteLossError as error:
                    failure = ("infeasible:nan", str(error))
                train_seconds = time.perf_counter() - train_started
                optimizer_steps = trainer.state.global_step
                trial.set_user_attr("peak_memory_mb", _peak_memory_mb(self.device, memory_before))
                trial.set_user_attr("setup_seconds", round(setup_seconds, 3))
        except Exception as error:
            trial.set_user_attr("stop_reason", "failed")
            trial.set_user_attr("error", f"{type(error).__name__}: {_first_line(error)}")
            raise
        finally:
            watch.detach()
            del trainer, model
            gc.collect()
            if self.device == "cuda":
                torch.cuda.empty_cache()

        eval_seconds = callback.eval_seconds if callback else 0.0
        training_only = max(train_seconds - eval_seconds, 1e-9)
        trial.set_user_attr("examples_seen", watch.examples)
        trial.set_user_attr("optimizer_steps", optimizer_steps)
        trial.set_user_attr("train_seconds", round(training_only, 3) if train_seconds else 0.0)
        trial.set_user_attr("eval_seconds", round(eval_seconds, 3))
        trial.set_user_attr("examples_per_second", round(watch.examples / training_only, 2) if train_seconds else 0.0)
        trial.set_user_attr("evaluations", callback.evaluations if callback else [])

        memory_constraint = budget_use if workload.memory_budget_gb else 0.0
        if failure is not None:
            reason, message = failure
            trial.set_user_attr("stop_reason", reason)
            trial.set_user_attr("infeasible_reason", message)
            if reason == "infeasible:oom":
                memory_constraint = max(memory_constraint, 1.0)
            trial.set_constraint(MEMORY_CONSTRAINT, memory_constraint)
            trial.set_constraint(FINITE_LOSS_CONSTRAINT, 1.0 if reason == "infeasible:nan" else 0.0)
            # Infeasible trials end COMPLETE (a FAILED trial teaches samplers nothing). Samplers
            # that honour constraints rank them by the violation; for the others the value is
            # the untrained model's score: no better than not training at all.
            trial.set_user_attr("value_source", "untrained model (infeasible trial)")
            return self.untrained_value()
        trial.set_constraint(MEMORY_CONSTRAINT, memory_constraint)
        trial.set_constraint(FINITE_LOSS_CONSTRAINT, 0.0)
        trial.set_user_attr("best_step", callback.best_step)
        trial.set_user_attr("value_source", "best evaluation")
        if callback.pruned:
            trial.set_user_attr("stop_reason", "pruned")
            raise optuna.TrialPruned(f"pruned at {callback.evaluations[-1]['step']} examples")
        trial.set_user_attr("stop_reason", "early-stopped" if callback.early_stopped else "completed")
        assert callback.best_value is not None  # the last step always evaluates
        return callback.best_value

    def untrained_value(self) -> float:
        """The metric of the base model with a freshly initialised adapter (zero update): computed once."""
        if self._untrained_value is None:
            model = self._fresh_model()
            trainer = self._trainer(model, None, "fp32", callbacks=[])
            self._untrained_value = self._read_value(trainer.evaluate())
            del trainer, model
            gc.collect()
        return self._untrained_value

    # -- pieces -------------------------------------------------------------------
    def _fresh_model(self) -> Any:
        return copy.deepcopy(self.base_model)

    def _with_adapter(self, model: Any, config: Any) -> Any:
        from transformers import set_seed

        set_seed(self.workload.seed)  # the adapter's initialisation, the same for every trial
        return attach_adapter(model, config, self.task)

    def _precision(self, precision: str) -> str:
        # Half precision autocast with a gradient scaler needs CUDA; on the CPU fp16 runs as fp32.
        return "fp32" if precision == "fp16" and self.device != "cuda" else precision

    def _trainer(self, model: Any, config: Any, precision: str, callbacks: list[Any]) -> Any:
        from transformers import Trainer, TrainingArguments
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        if config is None:
            kwargs: dict[str, Any] = {}
        else:
            kwargs = current_argument_names(config.to_training_arguments_kwargs())
        kwargs.update(
            output_dir=self._output_dir.name,
            fp16=precision == "fp16",
            bf16=precision == "bf16",
            # The callback decides when to evaluate; nothing is saved or logged during a trial.
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            load_best_model_at_end=False,
            metric_for_best_model=None,
            per_device_eval_batch_size=EVAL_BATCH_SIZE,
            seed=self.workload.seed,
            data_seed=self.workload.seed,
            use_cpu=self.device != "cuda",
            dataloader_pin_memory=self.device == "cuda",
            remove_unused_columns=False,
            report_to="none",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**kwargs),
            train_dataset=self.train_rows,
            eval_dataset=self.eval_rows,
            data_collator=collator_for(self.task, self.tokenizer),
            compute_metrics=classification_metrics if self.task == "classification" else None,
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        return trainer

    def _read_value(self, metrics: dict[str, float]) -> float:
        metric = self.workload.metric
        if metric == "perplexity":
            return math.exp(min(metrics["eval_loss"], 700.0))  # exp(>709) overflows a float
        return float(metrics[metric if metric == "eval_loss" else f"eval_{metric}"])


def attach_adapter(model: Any, config: Any, task: str) -> Any:
    """``model`` wrapped with a fresh LoRA adapter built from ``config.lora``."""
    import warnings

    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(**config.lora.to_lora_config_kwargs(PEFT_TASK_TYPES[task]))
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing` alias.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)


def collator_for(task: str, tokenizer: Any) -> Any:
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if task == "classification":
        return DataCollatorWithPadding(tokenizer)
    # Pads input ids with the pad token and labels with -100 (ignored by the loss).
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)


def current_argument_names(kwargs: dict[str, Any]) -> dict[str, Any]:
    """TrainingConfig's TrainingArguments kwargs under transformers 5's current names.

    Checkpointing is non-reentrant: the reentrant variant needs gradients on the
    frozen embeddings' outputs (an extra hook) to train adapters behind them.
    """
    kwargs = dict(kwargs)
    kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing")
    kwargs["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    return kwargs


def classification_metrics(prediction: Any) -> dict[str, float]:
    """Accuracy and macro-averaged F1 from the Trainer's logits."""
    import numpy

    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = numpy.asarray(logits).argmax(axis=-1)
    labels = numpy.asarray(prediction.label_ids)
    f1_scores = []
    for label in range(numpy.asarray(logits).shape[-1]):
        true_positive = numpy.sum((predicted == label) & (labels == label))
        predicted_count = numpy.sum(predicted == label)
        actual_count = numpy.sum(labels == label)
        if predicted_count + actual_count:
            f1_scores.append(2 * true_positive / (predicted_count + actual_count))
        else:
            f1_scores.append(0.0)
    return {"accuracy": float(numpy.mean(predicted == labels)), "f1": float(numpy.mean(f1_scores))}


def _memory_before(device: str) -> int:
    """Bytes in use now; also resets the peak so the trial's own peak is measured."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # Linux: reset the peak resident set size (VmHWM) to the current one
    except OSError:
        pass
    return _proc_status_bytes("VmRSS")


def _peak_memory_mb(device: str, before: int) -> float:
    """GPU: torch's peak allocation; CPU: peak resident memory growth during the trial."""
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(max(0, _proc_status_bytes("VmHWM") - before) / 2**20, 1)


def _proc_status_bytes(key: str) -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
