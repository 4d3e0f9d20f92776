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
    ("memory", "band"),
    [(None, None), (1.0, (1, 2)), (3.99, (1, 2)), (4.0, (2, 4)), (7.99, (2, 4)), (8.0, (8, 16)), (15.99, (8, 16)),
     (16.0, (16, 32)), (80.0, (16, 32))],
)
def test_batch_band(memory, band):
    assert _rules.per_device_batch_band(memory) == band


@pytest.mark.parametrize(("memory", "bf16"), [(4.0, False), (8.0, False), (15.99, False), (16.0, True), (80.0, True)])
def test_bf16_assumed_from_16gb(memory, bf16):
    assert _rules.bf16_assumed(memory) is bf16


@pytest.mark.parametrize(
    ("parameters", "band"),
    [
        (None, None), (4_400_000, (5e-4, 1e-3)), (110_000_000, (5e-4, 1e-3)), (150_000_000, (5e-4, 1e-3)),
        (150_000_001, None), (7_000_000_000, None), (12_499_999_999, None), (12_500_000_000, (1e-4, 3e-4)),
        (12_850_000_000, (1e-4, 3e-4)), (70_000_000_000, (1e-4, 3e-4)),
    ],
)
def test_learning_rate_band_by_model_size(parameters, band):
    assert _rules.learning_rate_band(parameters) == band


@pytest.mark.parametrize(
    ("band", "words"),
    [((32, 128), "32-128 target for most tasks, over the 16"), ((32, 64), "32-128 target"), ((8, 32), "8-32 for short memory"),
     ((8, 16), "over its 32-128 target"), ((16, 128), "outside")],
)
def test_effective_band_note(band, words):
    assert words in _rules.effective_band_note(band)


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


def test_the_chain_from_the_effective_batch():
    # 4000 examples, 16 per step (8 per device x 2): 250 steps per epoch, 750 in 3 epochs
    plan = _rules.plan_steps(4000, 16, 8, 1, num_train_epochs=3, lr_scheduler_type="linear", eval_strategy="steps")
    assert plan == _rules.StepPlan(gradient_accumulation_steps=2, effective_batch_size=16, steps_per_epoch=250,
                                   total_steps=750, warmup_ratio=0.1, eval_steps=31, save_steps=31, logging_steps=7,
                                   evaluations=24)
    # 48 wanted with 16 per device on 2 devices: 2 passes reach 64 (never below what was wanted)
    capped = _rules.plan_steps(200_000, 48, 16, 2, num_train_epochs=1, lr_scheduler_type="cosine", eval_strategy="epoch")
    assert (capped.gradient_accumulation_steps, capped.effective_batch_size, capped.total_steps) == (2, 64, 3125)
    assert capped.warmup_ratio == 0.06 and capped.eval_steps == capped.save_steps == 3125 and capped.evaluations == 1
    # eval_steps a space fixes is kept; checkpoints and logs follow it
    fixed = _rules.plan_steps(4000, 16, 8, 1, num_train_epochs=3, lr_scheduler_type="constant", eval_strategy="steps", eval_steps=50)
    assert (fixed.warmup_ratio, fixed.eval_steps, fixed.save_steps, fixed.logging_steps) == (0.0, 50, 50, 12)


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


@pytest.mark.parametrize(("eval_steps", "logging"), [(1, 1), (4, 1), (31, 7), (800, 200), (804, 200), (7812, 200)])
def test_logs_at_most_200_steps_apart(eval_steps, logging):
    # 1M examples at 16 per step: 62,500 steps per epoch, 7,812 between evaluations;
    # a quarter of that (1,953) would be far past the guide's "a log every 1-2 minutes"
    assert _rules.logging_steps_for(eval_steps) == logging


@pytest.mark.parametrize(
    ("total", "eval_steps", "strategy", "epochs", "evaluations"),
    [(750, 31, "steps", 3, 24), (750, 750, "steps", 3, 1), (750, 1000, "steps", 3, 0),
     (10, 10, "epoch", 5, 5), (10, 10, "epoch", 2.5, 3), (10, 10, "epoch", 1, 1)],
)
def test_evaluations_in_run(total, eval_steps, strategy, epochs, evaluations):
    assert _rules.evaluations_in_run(total, eval_steps, strategy, epochs) == evaluations


@pytest.mark.parametrize(("patience", "evaluations", "kept"), [(2, 5, 2), (5, 5, 4), (5, 6, 5), (2, 1, 0), (2, 0, 0), (0, 5, 0)])
def test_patience_that_fires(patience, evaluations, kept):
    assert _rules.patience_that_fires(patience, evaluations) == kept


LLAMA_2_7B = 6_738_415_616
LLAMA_2_7B_EMBEDDINGS_AND_HEAD = 2 * 32_000 * 4_096


def test_base_weights_meet_the_known_figures_of_a_7b_model():
    """Llama-2-7B: 13.5 GB in bf16 and about 4 GB in nf4, as model cards count (10**9 bytes)."""
    def decimal_gb(gb):
        return gb * _rules.GB / 1e9  # the project's GB are GiB: a card sold as 8 GB shows 8 GiB

    assert decimal_gb(_rules.base_weights_gb(LLAMA_2_7B, "bf16")) == pytest.approx(13.5, abs=0.05)
    assert _rules.base_weights_gb(LLAMA_2_7B, "bf16") == pytest.approx(12.55, abs=0.01)
    assert _rules.base_weights_gb(LLAMA_2_7B, "fp32") == 2 * _rules.base_weights_gb(LLAMA_2_7B, "fp16")
    # nf4: half a byte a weight, its 8-bit absmax per 64 and their fp32 absmax per 256 blocks;
    # embeddings and lm_head unquantized (fp32 once prepared for training)
    nf4 = _rules.base_weights_gb(LLAMA_2_7B, "4bit", unquantized_parameters=LLAMA_2_7B_EMBEDDINGS_AND_HEAD)
    assert decimal_gb(nf4) == pytest.approx(4.0, rel=0.1)
    assert nf4 == pytest.approx((6_476_005_376 * 0.51587 + LLAMA_2_7B_EMBEDDINGS_AND_HEAD * 4) / 2**30, rel=1e-4)
    # from the count alone, a lower bound: the fp32 embeddings and head add 0.85 GB
    assert _rules.base_weights_gb(LLAMA_2_7B, "4bit") == pytest.approx(nf4 - 0.85, abs=0.01)
    assert _rules.base_weights_gb(LLAMA_2_7B, "4bit") < _rules.base_weights_gb(LLAMA_2_7B, "8bit") < _rules.base_weights_gb(LLAMA_2_7B, "bf16")


@pytest.mark.parametrize(("memory", "margin"), [(4.0, 0.8), (8.0, 1.6), (24.0, 4.8), (80.0, 16.0)])
def test_training_margin_is_a_fifth_of_the_gpu(memory, margin):
    assert _rules.training_margin_gb(memory) == pytest.approx(margin)


@pytest.mark.parametrize(
    ("parameters", "memory", "chosen"),
    [
        (None, 8.0, None), (LLAMA_2_7B, None, None),  # size unknown, or the CPU
        (LLAMA_2_7B, 16.0, None), (LLAMA_2_7B, 15.0, "4bit"), (LLAMA_2_7B, 12.0, "4bit"), (LLAMA_2_7B, 8.0, "4bit"),
        (13_000_000_000, 24.0, "4bit"), (13_000_000_000, 40.0, None), (1_800_000_000, 4.0, "4bit"), (1_500_000_000, 4.0, None),
        (70_000_000_000, 80.0, "4bit"),
    ],
)
def test_a_base_whose_16_bit_weights_leave_too_little_to_train_loads_in_4bit(parameters, memory, chosen):
    assert _rules.quantization_for(parameters, memory) == chosen


def test_base_fit_note():
    assert _rules.base_fit_note(LLAMA_2_7B, "bf16", 16.0) == "12.6 GB in bf16 + 3.2 GB to train fit 16 GB"
    assert _rules.base_fit_note(LLAMA_2_7B, "4bit", 4.0) == "3.2 GB and up in 4bit + 0.8 GB to train exceed 4 GB"
