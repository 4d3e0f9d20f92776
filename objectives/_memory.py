"""A training-memory estimate made before any training, to skip configs that cannot fit.

Rough on purpose (a budget check, not a profiler), and errs high:
- base weights at their stored size (``weights_bytes``: a quantized base's packed weights
  and quantization constants);
- the adapter's trainable parameters in float32 with a gradient and two AdamW moments:
  4 + 4 + 8 = 16 bytes each;
- activations per transformer layer after Korthikanti et al. (2022), "Reducing
  Activation Recomputation in Large Transformer Models": s*b*h*(34 + 5*a*s/h) bytes in
  16-bit (doubled for fp32); with gradient checkpointing each layer keeps only its
  16-bit input, 2*s*b*h bytes, plus one layer recomputed in full;
- what peft's adapter keeps for each adapted linear layer beyond the base's own, per element
  of that layer's input (``adapter_input_bytes``);
- for causal LM the logits, their softmax and gradient: 3 * b*s*vocab in float32;
- a fixed 0.25 GB for the framework's workspace.
"""

from __future__ import annotations

from typing import Any

GB = 1024**3
WORKSPACE_GB = 0.25


def adapter_input_bytes(precision: str, dropout: bool) -> int:
    """Bytes an adapted linear layer keeps for backward per element of its input, beside what
    the base layer keeps.

    peft casts the input to the adapter's fp32 (``_cast_input_dtype``) and runs
    ``lora_A(dropout(x))``. Under 16-bit autocast ``lora_A`` casts that back and keeps the
    16-bit copy (autocast caches casts of weights, not of activations): 2 bytes. In fp32
    ``lora_A`` keeps its input itself, which without dropout is the tensor the base layer
    keeps already: 0 bytes. Dropout adds about 3 bytes in 16-bit and 4 in fp32, as measured on
    the CPU (tests/objectives/test_memory.py); CUDA's fused dropout keeps a byte mask, so there
    this errs high by a few bytes, as the estimate means to.
    """
    if precision in ("fp16", "bf16"):
        return 2 + (3 if dropout else 0)
    return 4 if dropout else 0


def estimate_training_memory_gb(model: Any, trainable_parameters: int, config: Any, max_length: int, task: str,
                                precision: str) -> dict[str, float]:
    """Breakdown in GB (keys weights, adapter_and_optimizer, activations, logits, workspace, total)
    of training ``config`` in ``precision``, the precision it really trains in (an fp32 config
    over a GPU's half-precision base trains under half autocast, see ``training_precision``);
    ``model`` has the adapter attached."""
    architecture = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = _first(architecture, ("hidden_size", "n_embd", "d_model"), 768)
    layers = _first(architecture, ("num_hidden_layers", "n_layer", "num_layers"), 12)
    heads = _first(architecture, ("num_attention_heads", "n_head", "num_heads"), 12)
    vocabulary = _first(architecture, ("vocab_size",), 32000)
    batch = config.per_device_train_batch_size
    sequence = max_length
    weights = weights_bytes(model)
    adapter = trainable_parameters * 16
    # The per-layer formula counts 16-bit activations; float32 ones take twice the bytes.
    precision_factor = 1 if precision in ("fp16", "bf16") else 2
    # the adapted layers' inputs, per transformer layer (all-linear adapts several per layer)
    adapted = sum(module.in_features for module in model.modules()
                  if hasattr(module, "lora_A") and isinstance(getattr(module, "in_features", None), int)) / layers
    adapter_inputs = sequence * batch * adapted * adapter_input_bytes(precision, config.lora.lora_dropout > 0)
    full_layer = sequence * batch * hidden * (34 + 5 * heads * sequence / hidden) * precision_factor + adapter_inputs
    if config.gradient_checkpointing:
        activations = layers * 2 * sequence * batch * hidden * precision_factor + full_layer
    else:
        activations = layers * full_layer
    logits = 3 * batch * sequence * vocabulary * 4 if task == "causal-lm" else 0
    breakdown = {
        "weights": weights / GB,
        "adapter_and_optimizer": adapter / GB,
        "activations": activations / GB,
        "logits": logits / GB,
        "workspace": WORKSPACE_GB,
    }
    breakdown["total"] = sum(breakdown.values())
    return {key: round(value, 4) for key, value in breakdown.items()}


def weights_bytes(model: Any) -> int:
    """Bytes of ``model``'s parameters as stored.

    bitsandbytes packs 4-bit weights two to a uint8 element (``numel`` counts bytes) and
    keeps their quantization constants beside them (``quant_state``: an absmax per block,
    nested under double quantization, and the code book); int8 weights keep an fp32 scale
    per row (``SCB``).
    """
    total = 0
    for parameter in model.parameters():
        total += _nbytes(parameter)
        state = getattr(parameter, "quant_state", None)
        while state is not None:
            total += _nbytes(state.absmax) + _nbytes(state.code)
            state = getattr(state, "state2", None)  # the nested state has none
        scales = getattr(parameter, "SCB", None)
        if scales is not None:
            total += _nbytes(scales)
    return total


def _nbytes(tensor: Any) -> int:
    return tensor.numel() * tensor.element_size()


def _first(config: Any, names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default
