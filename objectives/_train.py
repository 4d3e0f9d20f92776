"""Full training with a preset (not the proxy), and replaying one proxy trial."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ._errors import InfeasibleConfigError
from ._workload import Workload, metric_direction


def train_with_preset(workload: Workload, config: Any, output_dir: str | Path, *, progress: bool = True) -> dict[str, float]:
    """Train ``config`` on the whole training split, keep the best checkpoint, save the adapter.

    Writes ``output_dir/adapter`` (peft adapter + tokenizer, loadable with
    ``PeftModel.from_pretrained``), ``output_dir/checkpoints`` (Trainer checkpoints) and
    ``output_dir/training.json`` (workload, config, final metrics). Returns the final
    evaluation metrics on the whole evaluation split.
    """
    import torch
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

    from ._data import prepare_data, tokenize
    from ._model import load_base_model, load_tokenizer
    from ._objective import attach_adapter, classification_metrics, collator_for, current_argument_names

    if workload.torch_threads is not None:
        torch.set_num_threads(workload.torch_threads)
    output = Path(output_dir)
    data = prepare_data(workload)
    tokenizer = load_tokenizer(workload.model)
    set_seed(workload.seed)
    model = load_base_model(workload.model, data.task, data.label_names, tokenizer)
    train_rows = tokenize(data, data.train, tokenizer, workload.max_length)
    eval_rows = tokenize(data, data.eval, tokenizer, workload.max_length)
    set_seed(workload.seed)
    model = attach_adapter(model, config, data.task)
    on_gpu = torch.cuda.is_available()
    # Trainer prefixes "eval_"; perplexity is exp(eval_loss), so the best loss is the best perplexity.
    best_metric = {"eval_loss": "eval_loss", "perplexity": "eval_loss"}.get(workload.metric, workload.metric)
    kwargs = current_argument_names(
        config.to_training_arguments_kwargs(metric_for_best_model=best_metric, greater_is_better=metric_direction(workload.metric) == "maximize")
    )
    precision = "fp32" if config.precision == "fp16" and not on_gpu else config.precision
    kwargs.update(
        output_dir=str(output / "checkpoints"),
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        save_total_limit=2,  # the best checkpoint and the latest
        seed=workload.seed,
        data_seed=workload.seed,
        use_cpu=not on_gpu,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=not progress,
    )
    early_stopping = config.early_stopping_kwargs()
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**kwargs),
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=collator_for(data.task, tokenizer),
        compute_metrics=classification_metrics if data.task == "classification" else None,
        callbacks=[EarlyStoppingCallback(**early_stopping)] if early_stopping else [],
    )
    trainer.train()
    metrics = {key: float(value) for key, value in trainer.evaluate().items()}
    if data.task == "causal-lm":
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 700.0))
    model.save_pretrained(output / "adapter")
    tokenizer.save_pretrained(output / "adapter")
    record = {"workload": workload.to_dict(), "config": config.to_dict(), "metrics": metrics, "train_examples": len(train_rows), "eval_examples": len(eval_rows)}
    (output / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return metrics


def replay(workload: Workload, config: Any, *, objective: Any = None) -> float:
    """The proxy trial's value for ``config`` without a stored study.

    Deterministic on the CPU for a given workload (same seeds, same samples), so it
    checks that an exported preset reproduces its trial. Pass a loaded ``objective``
    to skip loading the model and data again. An infeasible config raises
    ``InfeasibleConfigError``.
    """
    import optuna

    from ._objective import LoraObjective

    objective = objective if objective is not None else LoraObjective(workload)
    study = optuna.create_study(direction=objective.direction, pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    value = objective(trial, config)
    reason = trial.user_attrs.get("stop_reason", "")
    if reason.startswith("infeasible"):
        raise InfeasibleConfigError(f"config is infeasible here ({reason}): {trial.user_attrs.get('infeasible_reason', '')}")
    return value
