"""Quantized bases (QLoRA) on the CPU: bitsandbytes runs 4-bit and 8-bit LoRA training there too."""

from __future__ import annotations

import math
import sys

import optuna
import pytest
import torch

from lora_search.objectives import LoraObjective, Workload, train_with_preset
from lora_search.objectives._errors import ModelError
from lora_search.objectives._memory import estimate_training_memory_gb, weights_bytes
from lora_search.objectives._model import fit_base_to_gpu, load_base_model
from lora_search.spaces import base_weights_gb

optuna.logging.set_verbosity(optuna.logging.WARNING)
bitsandbytes = pytest.importorskip("bitsandbytes")


def tiny_llama(folder, tokenizer_folder, *, hidden=64, classes=None):
    """A 2-layer Llama (causal LM, or a classifier with ``classes``) with the tiny GPT-2's word tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, num_labels=classes or 2)
    (LlamaForSequenceClassification if classes else LlamaForCausalLM)(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tiny_gpt2):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_gpt2)


@pytest.fixture(scope="module")
def llama_classifier(tmp_path_factory, tiny_gpt2):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama-classifier"), tiny_gpt2, classes=2)


@pytest.fixture(scope="module")
def qa_workload(llama, qa_jsonl):
    return Workload(model=llama, data=qa_jsonl, prompt_column="prompt", response_column="response", train_sample=32, eval_sample=16,
                    max_length=24, evaluations_per_trial=2, quantization="4bit", torch_threads=1)


def state_of(model):
    """Every parameter and quantization constant of ``model``, cloned: what a trial must leave alone."""
    state = {}
    for name, parameter in model.named_parameters():
        state[name] = (type(parameter).__name__, parameter.requires_grad, parameter.detach().clone())
        quant_state = getattr(parameter, "quant_state", None)
        if quant_state is not None:
            state[f"{name}.absmax"] = quant_state.absmax.clone()
            state[f"{name}.nested_absmax"] = quant_state.state2.absmax.clone()
    return state


def same_state(before, after):
    assert before.keys() == after.keys()
    for name, value in before.items():
        other = after[name]
        if isinstance(value, tuple):
            assert value[:2] == other[:2] and torch.equal(value[2], other[2]), name
        else:
            assert torch.equal(value, other), name


def trials(objective, configs):
    study = optuna.create_study(direction=objective.direction, pruner=optuna.pruners.NopPruner())
    study.optimize(lambda trial: objective(trial, configs[trial.number]), n_trials=len(configs))
    return study.trials


def test_4bit_causal_lm_trials_train_the_one_quantized_base(qa_workload, good_config):
    objective = LoraObjective(qa_workload)
    base = objective.base_model
    assert base.is_loaded_in_4bit
    quantized = {name for name, p in base.named_parameters() if type(p).__name__ == "Params4bit"}
    assert quantized and all(".layers." in name for name in quantized)  # embeddings, norms and lm_head stay unquantized
    assert {p.dtype for name, p in base.named_parameters() if name not in quantized} == {torch.float32}
    quant_state = base.model.layers[0].self_attn.q_proj.weight.quant_state
    assert quant_state.quant_type == "nf4" and quant_state.nested and quant_state.dtype == torch.float32
    before, loads = state_of(base), id(base)
    configs = [good_config.replace(num_train_epochs=1, learning_rate=3e-2),
               good_config.replace(num_train_epochs=1, learning_rate=1e-3, gradient_checkpointing=True, lora={"r": 4, "target_modules": "attention"})]
    done = trials(objective, configs)
    assert [t.user_attrs["stop_reason"] for t in done] == ["completed", "completed"]
    assert all(math.isfinite(t.value) for t in done) and done[0].value != done[1].value
    assert id(objective.base_model) == loads and objective.base_model is base
    same_state(before, state_of(base))
    assert not base.training and not any("lora_" in name for name, _ in base.named_parameters())
    assert not any(getattr(module, "gradient_checkpointing", False) for module in base.modules())
    assert getattr(base, "_require_grads_hook", None) is None
    assert objective.model_parameters == base.num_parameters() > sum(p.numel() for p in base.parameters())  # counted unpacked


@pytest.mark.parametrize("fixture", ["tiny_bert", "llama_classifier"])
def test_4bit_classification_trains_an_unquantized_fp32_head(request, fixture, sentiment_csv, good_config):
    objective = LoraObjective(Workload(model=request.getfixturevalue(fixture), data=sentiment_csv, train_sample=32, eval_sample=16,
                                       max_length=16, evaluations_per_trial=2, quantization="4bit", torch_threads=1))
    base = objective.base_model
    head = base.classifier if fixture == "tiny_bert" else base.score
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
    assert any(type(p).__name__ == "Params4bit" for p in base.parameters())
    before = state_of(base)
    trial, = trials(objective, [good_config.replace(num_train_epochs=1)])
    assert trial.user_attrs["stop_reason"] == "completed" and math.isfinite(trial.value)
    same_state(before, state_of(base))


def test_8bit_causal_lm_trial_runs_on_the_cpu(qa_workload, good_config, capfd):
    objective = LoraObjective(qa_workload.replace(quantization="8bit"))
    assert objective.base_model.is_loaded_in_8bit
    trial, = trials(objective, [good_config.replace(num_train_epochs=1, learning_rate=3e-2)])
    assert trial.user_attrs["stop_reason"] == "completed" and math.isfinite(trial.value)
    assert "MatMul8bitLt" not in capfd.readouterr().err  # bitsandbytes' notice of every int8 forward is kept quiet


def test_train_with_a_4bit_base_saves_the_adapter(qa_workload, good_config, tmp_path):
    from peft import PeftConfig

    record = train_with_preset(qa_workload, good_config.replace(num_train_epochs=1, eval_steps=4, save_steps=4), tmp_path, progress=False)
    assert record["workload"]["quantization"] == "4bit"
    assert all(math.isfinite(value) for value in record["metrics"].values())
    assert PeftConfig.from_pretrained(tmp_path / "adapter").r == good_config.lora.r


def test_the_weights_estimate_counts_packed_4bit_weights_and_their_constants(tmp_path, tiny_gpt2):
    from transformers import AutoTokenizer

    folder = tiny_llama(tmp_path, tiny_gpt2, hidden=512)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    full = load_base_model(folder, "causal-lm", [], tokenizer, "cpu", "fp32", None)
    nf4 = load_base_model(folder, "causal-lm", [], tokenizer, "cpu", "fp32", "4bit")
    parameters = full.num_parameters()
    assert nf4.num_parameters() == parameters
    unquantized = sum(p.numel() for p in nf4.parameters() if type(p).__name__ != "Params4bit")
    real = weights_bytes(nf4)
    assert real < weights_bytes(full) / 4
    # the estimate from the parameter count meets the real bytes (code books of a few hundred bytes per layer aside)
    assert base_weights_gb(parameters, "4bit", unquantized_parameters=unquantized) * 2**30 == pytest.approx(real, rel=0.01)
    assert base_weights_gb(parameters, "fp32") * 2**30 == weights_bytes(full)
    from lora_search.spaces import TrainingConfig

    estimate = estimate_training_memory_gb(nf4, 0, TrainingConfig(), 16, "causal-lm", "fp32")
    assert estimate["weights"] == pytest.approx(real / 2**30, abs=1e-4)


def test_parameters_are_counted_without_loading_the_weights(llama, llama_classifier):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from lora_search.objectives._model import count_parameters

    assert count_parameters(llama, "causal-lm") == AutoModelForCausalLM.from_pretrained(llama).num_parameters()
    assert count_parameters(llama_classifier, "classification") == AutoModelForSequenceClassification.from_pretrained(llama_classifier).num_parameters()
    assert count_parameters(llama, None) < count_parameters(llama, "causal-lm")  # the backbone: no head before the task is known


def test_quantizing_without_bitsandbytes_names_what_to_install(qa_workload, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(ModelError, match=r"needs bitsandbytes, which is not installed: pip install 'lora-search\[quantize\]'"):
        LoraObjective(qa_workload)


def test_a_bitsandbytes_too_old_for_transformers_says_which_it_needs(qa_workload, monkeypatch):
    from transformers.quantizers import quantizer_bnb_4bit

    monkeypatch.setattr(quantizer_bnb_4bit, "is_bitsandbytes_available", lambda: False)
    with pytest.raises(ModelError, match=r"cannot be loaded: .*requires bitsandbytes: `pip install -U bitsandbytes>="):
        LoraObjective(qa_workload)


@pytest.mark.parametrize(
    ("memory", "parameters", "given", "chosen", "note"),
    [
        (None, 7_000_000_000, None, None, None),  # CPU: host memory is rarely the limit
        (24.0, 6_740_000_000, None, None, None),  # 12.6 GB in bf16 leaves 24 GB room to train
        (16.0, 6_740_000_000, None, None, None),
        (12.0, 6_740_000_000, None, "4bit", "takes 12.6 GB in bf16, leaving this 12 GB GPU too little to train: loading it in 4-bit"),
        (8.0, 6_740_000_000, "8bit", "8bit", None),  # a choice given is kept
    ],
)
def test_a_base_too_large_for_the_gpu_in_16_bits_is_loaded_in_4bit(monkeypatch, memory, parameters, given, chosen, note):
    from lora_search.objectives import _hardware, _model

    hardware = {"accelerator": "cuda", "devices": 1, "gpu_memory_gb": memory, "bf16_supported": True} if memory else _hardware.detect_hardware()
    monkeypatch.setattr(_hardware, "detect_hardware", lambda: hardware)
    monkeypatch.setattr(_model, "count_parameters", lambda name, task: parameters)
    workload, why = fit_base_to_gpu(Workload(quantization=given))
    assert workload.quantization == chosen
    assert (why is None) if note is None else (note in why)


@pytest.mark.parametrize(
    ("parameters", "given", "message"),
    [(70_000_000_000, None, "the 70B-parameter base takes 33.6 GB in 4bit, more than this 24 GB GPU holds: use a smaller model"),
     (70_000_000_000, "8bit", "takes 65.2 GB in 8bit, more than this 24 GB GPU holds: use a smaller model"),
     (30_000_000_000, "8bit", r"takes 27.9 GB in 8bit, more than this 24 GB GPU holds: use --quantize 4bit \(14.4 GB\), a smaller model")],
)
def test_a_base_too_large_even_quantized_is_refused(monkeypatch, parameters, given, message):
    from lora_search.objectives import _hardware, _model

    monkeypatch.setattr(_hardware, "detect_hardware", lambda: {"accelerator": "cuda", "devices": 1, "gpu_memory_gb": 24.0, "bf16_supported": True})
    monkeypatch.setattr(_model, "count_parameters", lambda name, task: parameters)
    with pytest.raises(ModelError, match=message):
        fit_base_to_gpu(Workload(quantization=given))
