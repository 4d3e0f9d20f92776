"""The guide's thresholds, at and either side of each boundary."""

import pytest

from lora_search.spaces import _rules


@pytest.mark.parametrize(
    ("size", "band"),
    [(1, (5, 10)), (999, (5, 10)), (1000, (3, 5)), (1001, (3, 5)), (100_000, (3, 5)), (100_001, (1, 3)), (10**7, (1, 3))],
)
def test_epochs_band(size, band):
    assert _rules.epochs_band(size) == band


@pytest.mark.parametrize(
    ("size", "band"),
    [(999, (0.01, 0.1)), (1000, (0.001, 0.1)), (100_000, (0.001, 0.1)), (100_001, (0.001, 0.01))],
)
def test_weight_decay_band(size, band):
    assert _rules.weight_decay_band(size) == band


@pytest.mark.parametrize(("size", "strategy"), [(999, "epoch"), (1000, "steps"), (10**6, "steps")])
def test_eval_strategy(size, strategy):
    assert _rules.eval_strategy_for(size) == strategy


@pytest.mark.parametrize(
    ("steps", "scheduler", "ratio"),
    [
        (1, "linear", 0.1), (999, "cosine", 0.1), (1000, "linear", 0.06), (1001, "linear", 0.06),
        (10_000, "cosine", 0.06), (10_001, "linear", 0.03), (10**6, "constant_with_warmup", 0.03),
        (10, "constant", 0.0), (50_000, "constant", 0.0),
    ],
)
def test_warmup_ratio(steps, scheduler, ratio):
    assert _rules.warmup_ratio_for(steps, scheduler) == ratio


@pytest.mark.parametrize(
    ("memory", "cap"),
    [(None, None), (1.0, 2), (3.99, 2), (4.0, 4), (7.99, 4), (8.0, 16), (15.99, 16), (16.0, 32), (80.0, 32)],
)
def test_batch_cap(memory, cap):
    assert _rules.per_device_batch_cap(memory) == cap


@pytest.mark.parametrize(("memory", "on"), [(None, False), (4.0, True), (7.99, True), (8.0, False), (16.0, False), (24.0, False)])
def test_gradient_checkpointing(memory, on):
    assert _rules.gradient_checkpointing_for(memory) is on


@pytest.mark.parametrize(
    ("accelerator", "bf16", "precision"), [("cpu", False, "fp32"), ("cuda", True, "bf16"), ("cuda", False, "fp16")]
)
def test_precision(accelerator, bf16, precision):
    assert _rules.precision_for(accelerator, bf16) == precision


def test_steps():
    # 4000 examples / (16 per step) = 250 steps; 4001 needs one more
    assert _rules.steps_per_epoch(4000, 16) == 250
    assert _rules.steps_per_epoch(4001, 16) == 251
    assert _rules.steps_per_epoch(3, 16) == 1
    assert _rules.total_steps(4000, 16, 3) == 750


@pytest.mark.parametrize("epoch_steps", list(range(5, 400)) + [1234, 99_999, 10**6])
def test_eval_steps_give_five_to_ten_evaluations(epoch_steps):
    interval = _rules.eval_steps_for(epoch_steps)
    assert 5 <= epoch_steps // interval <= 10


@pytest.mark.parametrize("epoch_steps", [1, 2, 3, 4])
def test_eval_steps_short_epochs_evaluate_every_step(epoch_steps):
    assert _rules.eval_steps_for(epoch_steps) == 1


def test_eval_steps_aim_at_eight():
    assert _rules.eval_steps_for(800) == 100
    assert 250 // _rules.eval_steps_for(250) == 8
