"""The Trainer builder: TrainingArguments names of the installed transformers, averaging gradient accumulation."""

from __future__ import annotations

import copy
import dataclasses
import math
import random

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from lora_search.objectives._model import attach_adapter
from lora_search.objectives._trainer import build_trainer, training_arguments
from lora_search.spaces import TrainingConfig

CHECKPOINTING = TrainingConfig(gradient_checkpointing=True)


def test_checkpointing_uses_a_name_the_installed_transformers_has(tmp_path, recwarn):
    kwargs = training_arguments(CHECKPOINTING, output_dir=str(tmp_path), use_cpu=True)
    fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    chosen = [name for name in ("activation_checkpointing", "gradient_checkpointing") if name in kwargs]
    assert len(chosen) == 1 and chosen[0] in fields and f"{chosen[0]}_kwargs" in fields
    arguments = TrainingArguments(**kwargs)
    assert getattr(arguments, chosen[0]) is True
    assert getattr(arguments, f"{chosen[0]}_kwargs") == {"use_reentrant": False}
    assert not [w for w in recwarn if "checkpointing" in str(w.message)]  # no deprecated alias


def test_checkpointing_falls_back_to_the_old_name(monkeypatch):
    import transformers

    @dataclasses.dataclass
    class OlderTrainingArguments:  # transformers 5 before activation_checkpointing
        gradient_checkpointing: bool = False
        gradient_checkpointing_kwargs: dict | None = None

    monkeypatch.setattr(transformers, "TrainingArguments", OlderTrainingArguments)
    kwargs = training_arguments(CHECKPOINTING)
    assert kwargs["gradient_checkpointing"] is True and kwargs["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert not any(name.startswith("activation_checkpointing") for name in kwargs)


# --- gradient accumulation averages ---------------------------------------------------


class PreStepGradients(TrainerCallback):
    """The trainable parameters' gradients just before the first optimizer step."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def one_step(base, rows, task, tokenizer, batch, accumulation, tmp_path):
    """(gradients, logged training loss, model_accepts_loss_kwargs) of one optimizer step over all 16 rows."""
    from transformers import set_seed

    config = TrainingConfig(per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, warmup_ratio=0.0).replace(
        lora={"lora_dropout": 0.0, "target_modules": "all-linear"})
    set_seed(0)
    model = attach_adapter(copy.deepcopy(base), config, task)
    grab = PreStepGradients()
    trainer = build_trainer(model, config, task=task, tokenizer=tokenizer, train_rows=rows, eval_rows=rows, device="cpu", base_precision="fp32", seed=0,
                            output_dir=str(tmp_path), callbacks=[grab], max_steps=1, max_grad_norm=0.0, logging_strategy="no",
                            save_strategy="no", eval_strategy="no", load_best_model_at_end=False)
    loss = trainer.train().training_loss
    return grab.gradients, loss, trainer.model_accepts_loss_kwargs


def assert_same_gradients(reference, other):
    assert reference.keys() == other.keys() and reference
    flat = torch.cat([reference[name].flatten() for name in reference])
    difference = torch.cat([(other[name] - reference[name]).flatten() for name in reference])
    assert flat.norm() > 0
    assert difference.norm() <= 1e-4 * flat.norm(), f"relative gradient difference {difference.norm() / flat.norm():.3g}"


@pytest.fixture(scope="module")
def classification_case(minilm_tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        num_labels=2)
    base = BertForSequenceClassification(config).requires_grad_(False)
    words = "the tea was good and the snack was bad".split()
    texts = [" ".join(words[: 2 + index % 8]) for index in range(16)]  # lengths differ: padding differs per batch
    encoded = minilm_tokenizer(texts, truncation=True, max_length=40)
    rows = [{**{key: encoded[key][i] for key in encoded}, "labels": i % 2} for i in range(16)]
    return base, rows, minilm_tokenizer


@pytest.fixture(scope="module")
def causal_case(tiny_gpt2):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    base = LlamaForCausalLM(config).requires_grad_(False)
    rng = random.Random(0)
    rows = []
    for index in range(16):
        ids = [rng.randrange(3, len(tokenizer)) for _ in range(4 + index)]  # 4 to 19 tokens: padding differs per batch
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100, -100] + ids[2:]})
    return base, rows, tokenizer


@pytest.mark.parametrize("case", ["classification", "causal-lm"])
def test_accumulated_step_equals_one_big_batch(case, classification_case, causal_case, tmp_path):
    base, rows, tokenizer = classification_case if case == "classification" else causal_case
    reference, reference_loss, _ = one_step(base, rows, case, tokenizer, 16, 1, tmp_path)
    for batch, accumulation in ((4, 4), (2, 8)):
        gradients, loss, divides_by_count = one_step(base, rows, case, tokenizer, batch, accumulation, tmp_path)
        assert_same_gradients(reference, gradients)
        assert loss == pytest.approx(reference_loss, rel=1e-4)
        # Causal LM keeps the token-level mean over the whole accumulated batch; classification averages batch means.
        assert divides_by_count is (case == "causal-lm")
    # An untrained head scores about chance: ln 2 for two classes, ln(vocabulary) for next tokens.
    chance = math.log(2) if case == "classification" else math.log(len(tokenizer))
    assert reference_loss == pytest.approx(chance, rel=0.1)
