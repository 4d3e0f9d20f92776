"""The one Trainer builder: proxy trials and full training differ only in the arguments they pass."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lora_search.spaces import TrainingConfig

# A classifier's evaluation batch: no gradients or activations are kept and its logits are a
# few numbers per example, so it can be larger than training batches. A causal LM evaluates
# at its training batch instead: its logits take batch x length x vocabulary x 4 bytes in
# fp32 (64 x 2,048 tokens x 128,256 = 67 GB for a Llama 3), where the batch that trains fits.
CLASSIFICATION_EVAL_BATCH_SIZE = 64


def training_precision(precision: str, base_precision: str) -> str:
    """The precision a config's ``precision`` trains in over a base stored in ``base_precision``.

    An fp32 base is the CPU's, where fp16 autocast with a gradient scaler is missing: fp16
    runs as fp32. A half-precision base (a GPU's) meets the fp32 adapter and head only
    under autocast, and in its own half: the base is bf16 only where the GPU computes in
    bf16, which the guide prefers to fp16 there (fp16 autocast over bf16 weights would also
    overflow activations a bf16-trained model produces beyond fp16's 65,504), and fp16 where
    it does not, where bf16 autocast is not to be had.
    """
    if base_precision == "fp32":
        return "fp32" if precision == "fp16" else precision
    return base_precision


def accumulation_here(config: TrainingConfig, config_devices: int, parallel: int) -> int:
    """The accumulation that trains ``config``'s effective batch (per-device x accumulation x
    ``config_devices``, as the guide counts it) where the Trainer spreads each batch over
    ``parallel`` devices (``data_parallel_width``): a worker on one GPU accumulates 8 passes
    of 16 where the full run on 8 GPUs takes 1 pass of 16 on each, 128 per optimizer step
    either way."""
    return max(1, round(config.gradient_accumulation_steps * config_devices / parallel))


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # exp(>709) overflows a float


def evaluation_value(metric: str, metrics: dict[str, float]) -> float:
    """The workload's ``metric`` in an evaluation's metrics (the Trainer's, prefixed "eval_")."""
    if metric == "perplexity":
        return perplexity(metrics["eval_loss"])
    return float(metrics[metric if metric == "eval_loss" else f"eval_{metric}"])


def training_arguments(config: TrainingConfig, **overrides: Any) -> dict[str, Any]:
    """``config``'s ``TrainingArguments`` kwargs under the installed transformers' names, then ``overrides``.

    Newer transformers 5 releases call checkpointing ``activation_checkpointing`` (keeping
    ``gradient_checkpointing`` as a deprecated alias); older ones know only the old name.
    Checkpointing is non-reentrant: the reentrant variant needs gradients on the frozen
    embeddings' outputs (an extra hook) to train adapters behind them.
    """
    import dataclasses

    from transformers import TrainingArguments

    kwargs = config.to_training_arguments_kwargs()
    fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    kwargs[name] = kwargs.pop("gradient_checkpointing")
    kwargs[f"{name}_kwargs"] = {"use_reentrant": False}
    return {**kwargs, **overrides}


def build_trainer(
    model: Any,
    config: TrainingConfig,
    *,
    task: str,
    tokenizer: Any,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    device: str,
    base_precision: str,
    seed: int,
    output_dir: str,
    callbacks: Sequence[Any] = (),
    progress: bool = False,
    **arguments: Any,
) -> Any:
    """A Trainer for ``model`` with ``config``; ``arguments`` are the TrainingArguments its caller sets.

    Without ``progress`` nothing is printed: no progress bar, no metric lines.
    """
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    precision = training_precision(config.precision, base_precision)
    kwargs = training_arguments(
        config,
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        per_device_eval_batch_size=CLASSIFICATION_EVAL_BATCH_SIZE if task == "classification" else config.per_device_train_batch_size,
        seed=seed,
        data_seed=seed,
        use_cpu=device != "cuda",
        dataloader_pin_memory=device == "cuda",
        remove_unused_columns=False,
        # under a distributed launch: every adapter weight is in the forward pass, so DDP need
        # not walk the graph for unused ones at every step
        ddp_find_unused_parameters=False,
        report_to="none",
        disable_tqdm=not progress,
        output_dir=output_dir,
        **arguments,
    )
    collator = collator_for(task, tokenizer)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**kwargs),
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=collator,
        compute_metrics=classification_metrics if task == "classification" else None,
        callbacks=list(callbacks),
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)
    if trainer.model_accepts_loss_kwargs:
        trainer.model_accepts_loss_kwargs = _loss_divides_by_item_count(trainer, collator([train_rows[0]]))
    return trainer


def _loss_divides_by_item_count(trainer: Any, batch: dict[str, Any]) -> bool:
    """Whether the trainer's model returns a loss summed and divided by the ``num_items_in_batch`` it is given.

    The Trainer passes the accumulated batch's label count to every model whose forward
    takes ``**kwargs`` and then no longer divides the loss by the accumulation steps. A
    PeftModel's forward always takes ``**kwargs``, yet heads such as sequence
    classification ignore the count and return a per-batch mean: accumulating those sums
    the gradients instead of averaging them. Causal LM losses do divide by the count,
    which averages over every token of the accumulated batch. So the model is asked: one
    example scored with a count of 1 and of 2 (in eval mode, without gradients, under
    the training's autocast).
    """
    import torch

    model, device = trainer.model, trainer.args.device
    batch = {key: value.to(device) for key, value in batch.items()}
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), trainer.accelerator.autocast():
            by_one, by_two = (model(**batch, num_items_in_batch=torch.tensor(count, device=device)).loss for count in (1, 2))
    finally:
        model.train(training)
    return bool(torch.isclose(by_one, 2 * by_two, rtol=1e-3))


def collator_for(task: str, tokenizer: Any) -> Any:
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if task == "classification":
        return DataCollatorWithPadding(tokenizer)
    # Pads input ids with the pad token and labels with -100 (ignored by the loss).
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)


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
