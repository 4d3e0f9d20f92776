"""The training-memory estimate's adapter term against what autograd really keeps on this CPU."""

from __future__ import annotations

import pytest
import torch

from lora_search.objectives import fresh_adapter
from lora_search.objectives._memory import adapter_input_bytes, estimate_training_memory_gb

BATCH, SEQUENCE = 4, 16


def saved_bytes(model, autocast: bool) -> int:
    """Bytes of the distinct tensors autograd keeps for backward over one training forward."""
    storages: dict[int, int] = {}

    def keep(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    inputs = {"input_ids": torch.randint(5, 100, (BATCH, SEQUENCE)), "labels": torch.zeros(BATCH, dtype=torch.long)}
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(**inputs).loss.backward()
    return sum(storages.values())


@pytest.mark.parametrize(("precision", "autocast"), [("fp32", False), ("bf16", True)])
def test_the_adapter_term_is_what_dropout_on_the_adapted_inputs_keeps(tiny_objective, good_config, precision, autocast):
    """The adapter term's difference between dropout and none is what autograd's saved
    tensors grow by (4 and 3 bytes an element: measured 3.8 and 3.0 on the 2-layer BERT,
    whose first layer's inputs need no gradient, so keep no dropout mask)."""
    measured, term, estimated = {}, {}, {}
    for dropout in (0.0, 0.1):
        config = good_config.replace(per_device_train_batch_size=BATCH, lora={"target_modules": "all-linear", "lora_dropout": dropout})
        with fresh_adapter(tiny_objective.base_model, config, "classification", 0) as model:
            measured[dropout] = saved_bytes(model, autocast)
            inputs = sum(module.in_features for module in model.modules() if hasattr(module, "lora_A"))
            term[dropout] = BATCH * SEQUENCE * inputs * adapter_input_bytes(precision, dropout > 0)
            estimated[dropout] = estimate_training_memory_gb(model, 0, config, SEQUENCE, "classification", precision)
    grown = measured[0.1] - measured[0.0]
    assert grown > 0
    assert term[0.1] - term[0.0] == pytest.approx(grown, rel=0.1)
    # the estimate carries the term (in GB, rounded to 4 places)
    assert (estimated[0.1]["activations"] - estimated[0.0]["activations"]) * 2**30 == pytest.approx(term[0.1] - term[0.0], abs=2**30 * 1e-4)


def test_an_adapter_without_dropout_keeps_a_16_bit_copy_under_autocast_and_nothing_in_fp32():
    assert adapter_input_bytes("bf16", dropout=False) == adapter_input_bytes("fp16", dropout=False) == 2
    assert adapter_input_bytes("fp32", dropout=False) == 0
