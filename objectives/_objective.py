"""One Optuna trial = one brief LoRA fine-tuning run on a fixed sample of the data."""

from __future__ import annotations

import gc
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lora_search.spaces import TrainingConfig, first_line, patience_that_fires

from ._data import length_note, prepare_data, tokenize
from ._errors import DataError
from ._hardware import data_parallel_width
from ._memory import estimate_training_memory_gb
from ._model import check_weight_files, count_parameters, fresh_adapter, load_base_model, load_tokenizer, training_device
from ._schedule import RUNG_FACTOR, ProxySchedule, rung_sizes
from ._tracking import TrackedRun, Tracking, rung_result_record, trial_record
from ._trainer import accumulation_here, build_trainer, evaluation_value, training_precision
from ._workload import Workload, metric_direction, metric_noise

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


def rung_patience(patience: int, full_per_epoch: int, per_epoch: int, evaluations: int) -> int:
    """The full run's early-stopping ``patience`` (in its evaluations, ``full_per_epoch`` per
    epoch) over the same share of an epoch at a rung evaluating ``per_epoch`` times, rounded
    up so the rung never gives up sooner than the run would; lowered so it can fire within
    the rung's ``evaluations``, and 0 (off) stays off. Counted in the rung's sparser
    evaluations unscaled, 8 at 8 per epoch (one epoch) became 8 at 4 per epoch (two): the
    rung then waited out dips the full run stops at, kept a later best the full run never
    reaches, and spent the second epoch (standard's rungs: 3,700 to 6,700 of 17,000 to
    21,000 examples; benchmarks/README.md, section 7, variant 17)."""
    if patience == 0:
        return 0
    return patience_that_fires(math.ceil(patience * per_epoch / full_per_epoch), evaluations)


class LoraObjective:
    """Loads the model and tokenized data once; each call trains one proxy trial.

    ``objective(trial, config)`` returns the best evaluation's metric, raises
    ``optuna.TrialPruned`` when the pruner stops it, and ends infeasible trials
    (out of memory, non-finite loss, over the memory budget) as COMPLETE with a
    positive constraint so samplers learn to avoid them. Any other exception
    propagates after the trial's error is recorded and the process is clean for the
    next trial: run the study with ``catch=(Exception,)``.

    ``train_at_rung(config, rung)`` trains a config again at a higher fidelity, unpruned:
    rung k trains a fresh adapter on RUNG_FACTOR^k times the proxy's training examples and
    is scored on RUNG_FACTOR^k times its validation rows (both capped at their splits), as
    often per epoch as the config's full run evaluates, up to RUNG_EVALUATIONS_PER_EPOCH.
    The search's rounds of successive halving (``run --rungs``) call it after the trials.

    With ``tracking``, each trial is a tracked run ``STUDY/trial-N`` in the study's group:
    the Trainer logs its training loss and evaluations, the trial its parameters, user
    attributes and value; each rung's training of it is ``STUDY/trial-N-rung-K``.

    ``load_base=False`` builds one that samples and counts but never trains: the data, the
    tokenizer and the base's parameter count (from its config), not its weights. The parent
    of ``run --workers N`` needs no more; with the weights it kept a copy of the base on GPU
    0 beside worker 0's, even where ``--devices`` left GPU 0 out.
    """

    def __init__(self, workload: Workload, tracking: Tracking | None = None, load_base: bool = True,
                 config_devices: int | None = None) -> None:
        import torch
        from transformers import set_seed

        self.workload = workload
        self.tracking = tracking
        if workload.torch_threads is not None:
            torch.set_num_threads(workload.torch_threads)
        self.data = prepare_data(workload)
        self.task = self.data.task
        self.direction = metric_direction(workload.metric)
        self.dataset_size = len(self.data.train)
        self.tokenizer = load_tokenizer(workload.model)
        self.device, self.base_precision = training_device()
        # A config's effective batch is per-device x accumulation x the devices its full run
        # spreads batches over (the run profile's, as the guide counts it); a training here
        # spreads them over ``parallel`` and accumulates the rest (``_batching``).
        self.parallel = data_parallel_width(self.device, workload.quantization)
        self.config_devices = config_devices if config_devices is not None else self.parallel
        set_seed(workload.seed)  # the classification head is initialised here, the same in every process
        if load_base:
            self.base_model = load_base_model(
                workload.model, self.task, self.data.label_names, self.tokenizer, self.device, self.base_precision, workload.quantization
            )
            # all of the base's weights, by elements whatever their precision: what the guide's size rules mean
            self.model_parameters = self.base_model.num_parameters()
        else:
            self.base_model = None
            check_weight_files(workload.model)  # what loading them would refuse, refused before any write
            self.model_parameters = count_parameters(
                workload.model, self.task, len(self.data.label_names) if self.task == "classification" else None
            )
        # rung 0 is the proxy; rung k (train_at_rung) a seeded sample of train_sample x RUNG_FACTOR^k rows
        self.rung_examples = rung_sizes(workload.train_sample, workload.rungs, self.dataset_size)
        self.train_rows = self._tokenized("train", workload.train_sample)
        self.eval_rows = self._tokenized("eval", workload.eval_sample)
        if not self.train_rows or not self.eval_rows:
            raise DataError(f"{self.data.source}: no usable examples after tokenization; check the text columns")
        self._output_dir = tempfile.TemporaryDirectory(prefix="lora-search-trial-")
        self._untrained_value: float | None = None
        self._rung_rows: dict[int, tuple[list, list]] = {}  # tokenized when a rung's first config trains

    def _tokenized(self, split: str, size: int) -> list:
        """A seeded sample of ``size`` rows of ``split`` (all of it when smaller), tokenized."""
        return tokenize(self.data, self.data.sample(split, size, self.workload.seed), self.tokenizer, self.workload.max_length)

    # -- the public surface -------------------------------------------------------
    def length_note(self) -> str | None:
        """What ``--max-length`` cut or left out of the trials' samples (the rungs' larger
        samples cut about as many in proportion); None if nothing."""
        return length_note({"training": self.train_rows, "validation": self.eval_rows}, self.workload.max_length)

    def schedule(self, config: TrainingConfig) -> ProxySchedule:
        """The proxy run of ``config``: its evaluation grid and planned steps."""
        return self._plan(config, len(self.train_rows), self.workload.evaluations_per_trial)

    def _plan(self, config: TrainingConfig, train_examples: int, evaluations: int) -> ProxySchedule:
        return ProxySchedule.plan(train_examples, config.num_train_epochs, *self._batching(config), evaluations)

    def _batching(self, config: TrainingConfig) -> tuple[int, int]:
        """(examples per forward pass, accumulation) that train ``config``'s effective batch here."""
        return (config.per_device_train_batch_size * self.parallel,
                accumulation_here(config, self.config_devices, self.parallel))

    def _as_trained_here(self, config: TrainingConfig) -> TrainingConfig:
        """``config`` with the accumulation ``_batching`` gives it on this process's devices."""
        accumulation = self._batching(config)[1]
        return config if accumulation == config.gradient_accumulation_steps else config.replace(gradient_accumulation_steps=accumulation)

    def _full_run_evaluations_per_epoch(self, config: TrainingConfig) -> int:
        """How many times per epoch ``config``'s full run evaluates: an epoch of the whole
        training split's optimizer steps over its eval_steps (once with epoch evaluation)."""
        if config.eval_strategy != "steps":
            return 1
        epoch = ProxySchedule.plan(self.dataset_size, 1, *self._batching(config), 1)
        return max(1, round(epoch.optimizer_steps / config.eval_steps))

    def report_steps(self, config: TrainingConfig) -> list[int]:
        """The steps (training examples) at which ``config``'s trial reports to Optuna."""
        return self.schedule(config).report_steps()

    def rung_fidelity(self, rung: int) -> tuple[int, int]:
        """The training examples and validation rows of ``rung``: RUNG_FACTOR^rung times the
        proxy's of each, capped at the splits. A rung decides between configs closer together
        than the rung below, and a score's noise falls only with the square root of its rows
        (one 128-row sample ranked a top rung of three configs against their full runs:
        benchmarks/README.md, section 7, variant 2)."""
        return (min(self.workload.train_sample * RUNG_FACTOR**rung, self.dataset_size),
                min(self.workload.eval_sample * RUNG_FACTOR**rung, len(self.data.eval)))

    def train_at_rung(self, config: TrainingConfig, rung: int, study_name: str | None = None, trial_number: int | None = None,
                      on_progress: Callable[[int, int, float | None], None] | None = None) -> dict[str, Any]:
        """Train ``config`` at ``rung``'s fidelity (``rung_fidelity``): a fresh adapter on a
        larger seeded training sample for its epochs, scored on a larger validation sample,
        never pruned, evaluated as often per epoch as its full run is (its eval_steps over
        the whole split), up to RUNG_EVALUATIONS_PER_EPOCH, with an early-stopping patience
        spanning as much of an epoch as the full run's (``rung_patience``). Pass the config as
        its full run trains it (``rederive_for_dataset``):
        the value then approximates the best checkpoint that run keeps, on fewer rows. The
        proxy's grid of 3 to 4 evaluations in all missed a config whose best lay between
        them (benchmarks/README.md, section 7, variant 12). Returns what the run left:
        ``value`` (the best evaluation; None when the config is infeasible there),
        ``stop_reason``, ``examples_seen``, ``seconds``, and for a feasible run
        ``best_step`` and ``evaluations``. With ``tracking``, the run is the
        tracked run ``STUDY/trial-N-rung-K`` in the study's group. ``on_progress`` is called
        after each optimizer step with the steps done, the steps planned and the best value
        so far."""
        if self.tracking is None or study_name is None or trial_number is None:
            return self._train_at_rung(config, rung, None, on_progress)
        with self.tracking.run(study_name, f"trial-{trial_number}-rung-{rung}") as tracked:
            result = self._train_at_rung(config, rung, tracked, on_progress)
            tracked.log(**rung_result_record(trial_number, rung, config, result))
        return result

    def _train_at_rung(self, config: TrainingConfig, rung: int, tracked: TrackedRun | None,
                       on_progress: Callable[[int, int, float | None], None] | None) -> dict[str, Any]:
        import optuna

        if rung not in self._rung_rows:
            train_examples, eval_examples = self.rung_fidelity(rung)
            self._rung_rows[rung] = (self._tokenized("train", train_examples), self._tokenized("eval", eval_examples))
        record = optuna.trial.FixedTrial({})  # holds the user attrs a run sets; nothing is reported or pruned
        precision = training_precision(config.precision, self.base_precision)
        full_per_epoch = self._full_run_evaluations_per_epoch(config)
        per_epoch = min(full_per_epoch, RUNG_EVALUATIONS_PER_EPOCH)
        evaluations = round(config.num_train_epochs * per_epoch)
        config = config.replace(early_stopping_patience=rung_patience(config.early_stopping_patience, full_per_epoch,
                                                                      per_epoch, evaluations))
        run = self._train_run(record, config, *self._rung_rows[rung], precision, tracked, evaluations, report=False,
                              on_progress=on_progress)
        result: dict[str, Any] = {"examples_seen": run.examples, "seconds": round(run.train_seconds, 1)}
        if run.failure is not None:
            return {**result, "value": None, "stop_reason": run.failure[0], "error": run.failure[1]}
        callback = run.callback
        return {**result, "value": callback.best_value, "best_step": callback.best_step,
                "stop_reason": "early-stopped" if callback.early_stopped else "completed", "evaluations": callback.evaluations}

    def __call__(self, trial: Any, config: TrainingConfig) -> float:
        if self.tracking is None:
            return self._train_trial(trial, config, None)
        with self.tracking.run(trial.study.study_name, f"trial-{trial.number}") as tracked:
            value = None
            try:
                value = self._train_trial(trial, config, tracked)
            finally:  # a pruned, failed or interrupted trial is recorded too
                tracked.log(**trial_record(trial, config, value))
        return value

    def _train_trial(self, trial: Any, config: TrainingConfig, tracked: TrackedRun | None) -> float:
        import optuna

        started = time.perf_counter()
        workload = self.workload
        schedule = self.schedule(config)
        precision = training_precision(config.precision, self.base_precision)
        trial.set_user_attr("seed", workload.seed)
        trial.set_user_attr("proxy.train_examples", len(self.train_rows))
        trial.set_user_attr("proxy.eval_examples", len(self.eval_rows))
        trial.set_user_attr("proxy.epochs", config.num_train_epochs)
        trial.set_user_attr("proxy.optimizer_steps", schedule.optimizer_steps)
        trial.set_user_attr("proxy.report_interval_examples", schedule.interval)
        trial.set_user_attr("proxy.report_steps", self.report_steps(config))
        trial.set_user_attr("proxy.precision", precision)

        run = self._train_run(trial, config, self.train_rows, self.eval_rows, precision, tracked,
                              self.workload.evaluations_per_trial, report=True)
        if run.callback is not None:
            trial.set_user_attr("setup_seconds", round(run.train_started - started, 3))
        if trial.user_attrs.get("baseline") and run.failure is None:
            self._check_first_rung(trial, run.callback.best_value)
        callback = run.callback
        eval_seconds = callback.eval_seconds if callback else 0.0
        training_only = max(run.train_seconds - eval_seconds, 1e-9)
        trial.set_user_attr("examples_seen", run.examples)
        trial.set_user_attr("optimizer_steps", run.optimizer_steps)
        trial.set_user_attr("train_seconds", round(training_only, 3) if run.train_seconds else 0.0)
        trial.set_user_attr("eval_seconds", round(eval_seconds, 3))
        trial.set_user_attr("examples_per_second", round(run.examples / training_only, 2) if run.train_seconds else 0.0)
        trial.set_user_attr("evaluations", callback.evaluations if callback else [])

        memory_constraint = run.budget_use if workload.memory_budget_gb else 0.0
        if run.failure is not None:
            reason, message = run.failure
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

    def _train_run(self, trial: Any, config: TrainingConfig, train_rows: list, eval_rows: list, precision: str,
                   tracked: TrackedRun | None, evaluations: int, report: bool,
                   on_progress: Callable[[int, int, float | None], None] | None = None) -> _Run:
        """Train a fresh adapter on ``train_rows``, evaluating on ``eval_rows`` about ``evaluations``
        times, on the schedule's grid."""
        import torch

        from ._callback import NonFiniteLossError, ProxyTrialCallback, TrainingWatch

        workload = self.workload
        run = _Run()
        trainer = None
        watch = TrainingWatch()
        try:
            with fresh_adapter(self.base_model, config, self.task, workload.seed) as model:
                trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                trial.set_user_attr("trainable_parameters", trainable)
                estimate = estimate_training_memory_gb(model, trainable, config, workload.max_length, self.task, precision)
                trial.set_user_attr("memory_estimate_gb", estimate)
                run.budget_use = estimate["total"] / workload.memory_budget_gb - 1 if workload.memory_budget_gb else 0.0
                if run.budget_use > 0:
                    run.failure = ("infeasible:over-budget", f"estimated {estimate['total']:.2f} GB exceeds the {workload.memory_budget_gb} GB budget")
                    return run
                watch.attach(model)
                schedule = self._plan(config, len(train_rows), evaluations)
                run.callback = ProxyTrialCallback(
                    trial,
                    schedule,
                    watch,
                    self._read_value,
                    maximize=self.direction == "maximize",
                    patience=config.early_stopping_patience,
                    threshold=config.early_stopping_threshold,
                    report=report,
                    on_progress=on_progress,
                )
                trainer = self._trainer(model, config, [run.callback], train_rows, eval_rows, tracked, schedule)
                memory_before = _memory_before(self.device)
                run.train_started = time.perf_counter()
                try:
                    trainer.train()
                except (torch.OutOfMemoryError, MemoryError) as error:
                    run.failure = ("infeasible:oom", first_line(error))
                except NonFiniteLossError as error:
                    run.failure = ("infeasible:nan", str(error))
                run.train_seconds = time.perf_counter() - run.train_started
                run.optimizer_steps = trainer.state.global_step
                peak = _peak_memory_mb(self.device, memory_before)
                trial.set_user_attr("peak_memory_mb", max(peak, trial.user_attrs.get("peak_memory_mb", 0.0)))
        except Exception as error:
            trial.set_user_attr("stop_reason", "failed")
            trial.set_user_attr("error", f"{type(error).__name__}: {first_line(error)}")
            raise
        finally:
            watch.detach()
            del trainer
            gc.collect()
            if self.device == "cuda":
                torch.cuda.empty_cache()
        run.examples = watch.examples
        return run

    def _check_first_rung(self, trial: Any, value: float) -> None:
        """Warn (user attr ``first_rung_warning``, on the baseline) when the first rung's value is
        no more than one standard error better than the untrained model's (worse counts too):
        that rung would rank configs on noise. Without rungs the proxy is the only rung."""
        untrained = self.untrained_value()
        noise = metric_noise(self.workload.metric, untrained, len(self.eval_rows))
        if first_rung_without_signal(value, untrained, noise, self.direction):
            first = self.rung_examples[0]
            what = "the first rung" if len(self.rung_examples) > 1 else "the proxy"
            remedy = f"more examples per trial give it signal: a new study with e.g. --train-sample {first * RUNG_FACTOR}"
            scored = len(self.eval_rows)
            # Scoring fewer rows than a trial trains on makes the noise, not the training, the
            # likelier cause: the noise falls as 1/sqrt(rows), so first rows are sqrt(first/scored)
            # times quieter. Where the validation split has no more rows, only training can help.
            if scored < first and len(self.data.eval) > scored:
                rows = min(first, len(self.data.eval))
                remedy = (f"scoring more validation rows shrinks the noise and more examples per trial give it signal: "
                          f"a new study with e.g. --eval-sample {rows} --train-sample {first * RUNG_FACTOR}")
            trial.set_user_attr(
                "first_rung_warning",
                f"{what} ({first:,} training examples) learns nothing measurable: the baseline's {self.workload.metric} "
                f"{value:.4g} is within noise (+-{noise:.2g}) of the untrained model's {untrained:.4g} "
                f"({scored:,} validation rows scored), so trials may be ranked on noise; {remedy}",
            )

    def untrained_value(self) -> float:
        """The metric of the base model with a freshly initialised adapter (zero update): computed once."""
        if self._untrained_value is None:
            config = TrainingConfig()
            with fresh_adapter(self.base_model, config, self.task, self.workload.seed) as model:
                self._untrained_value = self._read_value(self._trainer(model, config, [], self.train_rows, self.eval_rows).evaluate())
            gc.collect()
        return self._untrained_value

    # -- pieces -------------------------------------------------------------------
    def _trainer(self, model: Any, config: TrainingConfig, callbacks: list[Any], train_rows: list, eval_rows: list,
                 tracked: TrackedRun | None = None, schedule: ProxySchedule | None = None) -> Any:
        # The callback decides when to evaluate; nothing is saved, and only a tracked run logs
        # its training loss (about once per evaluation of its schedule).
        logged: dict[str, Any] = {"logging_strategy": "no"}
        if tracked is not None and schedule is not None:
            callbacks = [*callbacks, *tracked.trainer_callbacks()]
            logged = {"logging_strategy": "steps", "run_name": tracked.name,
                       "logging_steps": max(1, schedule.optimizer_steps // len(schedule.report_steps()))}
        return build_trainer(
            model,
            self._as_trained_here(config),
            task=self.task,
            tokenizer=self.tokenizer,
            train_rows=train_rows,
            eval_rows=eval_rows,
            device=self.device,
            base_precision=self.base_precision,
            seed=self.workload.seed,
            output_dir=self._output_dir.name,
            callbacks=callbacks,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            metric_for_best_model=None,
            **logged,
        )

    def _read_value(self, metrics: dict[str, float]) -> float:
        return evaluation_value(self.workload.metric, metrics)


# The most evaluations per epoch at a rung above the proxy. The full run evaluates 5 to 10
# times per epoch (the guide's rule); each evaluation at a rung scores as many validation
# rows as it has training examples, so at 8 per epoch evaluating costs about 2.7x the
# training (a forward pass is about a third of a training step), at 4 about 1.3x, and 4
# per epoch still lands on the half epochs where variant 12's missed best lay.
RUNG_EVALUATIONS_PER_EPOCH = 4


@dataclass
class _Run:
    """What training one config once (a trial, or a config at a rung) left."""

    callback: Any = None  # the run's ProxyTrialCallback; None: not trained (over the memory budget)
    examples: int = 0
    train_started: float = 0.0  # time.perf_counter() when its training began
    train_seconds: float = 0.0  # training and its evaluations
    optimizer_steps: int = 0
    budget_use: float = 0.0  # estimated memory / budget - 1: > 0 is over the budget
    failure: tuple[str, str] | None = None  # (stop_reason, message) of an infeasible run


def first_rung_without_signal(value: float, untrained: float, noise: float, direction: str) -> bool:
    """Whether ``value`` improves on ``untrained`` by no more than ``noise``, in ``direction``."""
    gain = untrained - value if direction == "minimize" else value - untrained
    return gain <= noise


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

