"""check_config flags each of the guide's common mistakes, and only those; rederive_for_dataset."""

import pytest

from lora_search.spaces import RunProfile, TrainingConfig, check_config, get_preset, rederive_for_dataset

GPU8 = RunProfile(4000, "cuda", 1, 8.0, True)

# follows every rule on an 8 GB bf16 GPU with 4000 examples:
# 8 per device x 2 = 16 per step -> 250 steps per epoch; eval every 31 -> 8 per epoch
CLEAN = TrainingConfig(
    per_device_train_batch_size=8, gradient_accumulation_steps=2, learning_rate=5e-4, warmup_ratio=0.1,
    eval_steps=31, save_steps=31, precision="bf16", early_stopping_patience=3,
)


def test_clean_config_is_silent():
    assert check_config(CLEAN, GPU8) == []


@pytest.mark.parametrize(
    ("changes", "rule", "words"),
    [
        ({"per_device_train_batch_size": 32}, "batch-too-large", "use 16 with gradient_accumulation_steps 4"),
        ({"learning_rate": 5e-3}, "learning-rate-too-high", "above 0.002"),
        ({"learning_rate": 1e-5}, "learning-rate-too-low", "below 5e-05"),
        ({"warmup_ratio": 0.0}, "no-warmup", "warmup_ratio 0 with the linear schedule"),
        ({"eval_steps": 10, "save_steps": 10}, "evaluation-too-frequent", "25 times per epoch of 250 steps"),
        ({"early_stopping_patience": 0}, "no-early-stopping", "disables early stopping"),
        # 750 steps evaluated every 31: 24 evaluations, so patience 24 never runs out
        ({"early_stopping_patience": 24}, "early-stopping-cannot-fire", "24 evaluation(s) in 750 steps"),
    ],
)
def test_each_mistake_is_flagged(changes, rule, words):
    findings = check_config(CLEAN.replace(**changes), GPU8)
    assert [f.rule for f in findings] == [rule]
    assert words in findings[0].message


def test_boundaries_are_not_mistakes():
    assert check_config(CLEAN.replace(per_device_train_batch_size=16, gradient_accumulation_steps=1, eval_steps=25, save_steps=25), GPU8) == []
    assert check_config(CLEAN.replace(learning_rate=2e-3), GPU8) == []
    assert check_config(CLEAN.replace(learning_rate=5e-5), GPU8) == []
    # a constant schedule goes without warmup in the guide
    assert check_config(CLEAN.replace(warmup_ratio=0.0, lr_scheduler_type="constant"), GPU8) == []
    # per-epoch evaluation is never too frequent (3 epochs: 3 evaluations, patience 2 can fire)
    assert check_config(CLEAN.replace(eval_strategy="epoch", eval_steps=1, save_steps=1, early_stopping_patience=2), GPU8) == []


def test_precision_only_where_it_cannot_run():
    # the guide's mistake 7 is compatibility: half precision on CPU, bf16 without bf16
    cpu = RunProfile(4000)
    for precision in ("bf16", "fp16"):
        findings = check_config(CLEAN.replace(precision=precision), cpu)
        assert [f.rule for f in findings] == ["wrong-precision"] and "half precision is for GPUs" in findings[0].message
        assert "use fp32" in findings[0].message
    assert check_config(CLEAN.replace(precision="fp32"), cpu) == []
    old_gpu = RunProfile(4000, "cuda", 1, 16.0, False)
    findings = check_config(CLEAN, old_gpu)
    assert [f.rule for f in findings] == ["wrong-precision"] and "cannot compute in bf16" in findings[0].message
    assert "use fp16" in findings[0].message
    # what runs is left alone: fp32 anywhere, fp16 on any GPU
    for precision in ("fp16", "fp32"):
        assert check_config(CLEAN.replace(precision=precision), old_gpu) == []
        assert check_config(CLEAN.replace(precision=precision), GPU8) == []


def test_early_stopping_must_be_able_to_fire():
    # steps: 750 steps / 31 = 24 evaluations; the first sets the best, so patience 23 is the most
    assert check_config(CLEAN.replace(early_stopping_patience=23), GPU8) == []
    # epochs: 500 examples, 3 epochs evaluated once each (the last, partial one too)
    small = RunProfile(500, "cuda", 1, 8.0, True)
    per_epoch = CLEAN.replace(eval_strategy="epoch", num_train_epochs=2.5)
    assert check_config(per_epoch.replace(early_stopping_patience=2), small) == []
    findings = check_config(per_epoch.replace(early_stopping_patience=3), small)
    assert [f.rule for f in findings] == ["early-stopping-cannot-fire"]
    assert "3 per-epoch evaluation(s) in 2.5 epochs" in findings[0].message and "at most 2" in findings[0].message
    # a run that evaluates once: patience cannot act, and going without it is no mistake
    once = per_epoch.replace(num_train_epochs=1)
    assert "evaluate more often" in check_config(once, small)[0].message
    assert check_config(once.replace(early_stopping_patience=0), small) == []
    # eval_steps beyond the run: no evaluation at all
    never = CLEAN.replace(eval_steps=1000, save_steps=1000)
    assert [f.rule for f in check_config(never, GPU8)] == ["early-stopping-cannot-fire"]


@pytest.mark.parametrize(
    ("parameters", "rate", "rule", "words"),
    [
        (13_000_000_000, 1e-3, "learning-rate-too-high", "above 0.0006, double the guide's highest 0.0003"),
        (13_000_000_000, 6e-4, None, None),
        (110_000_000, 2e-4, "learning-rate-too-low", "stay within 0.0005 to 0.001 for a 110M-parameter model"),
        (110_000_000, 2.5e-4, None, None),
        (7_000_000_000, 1e-4, None, None),  # no band for 7B: the general 5e-05..2e-3
        (7_000_000_000, 3e-3, "learning-rate-too-high", "stay within 0.0001 to 0.001"),
    ],
)
def test_learning_rate_by_model_size(parameters, rate, rule, words):
    # an 80 GB GPU: these bases fit it in bf16 (on 8 GB they would be flagged too, see below)
    findings = check_config(CLEAN.replace(learning_rate=rate), RunProfile(4000, "cuda", 1, 80.0, True, parameters))
    assert [f.rule for f in findings] == ([rule] if rule else [])
    assert rule is None or words in findings[0].message


@pytest.mark.parametrize(
    ("memory", "parameters", "quantization", "words"),
    [
        (8.0, 7_000_000_000, None, "a 7B-parameter model leaves this GPU too little to train (13.0 GB in bf16 + 1.6 GB to train exceed "
                                   "8 GB): load it in 4-bit (QLoRA, --quantize 4bit: 3.4 GB and up in 4bit"),
        (8.0, 7_000_000_000, "8bit", "(6.5 GB and up in 8bit + 1.6 GB to train exceed 8 GB): load it in 4-bit"),
        (8.0, 7_000_000_000, "4bit", None),
        (16.0, 6_740_000_000, None, None),  # Llama-2-7B: 12.6 GB in bf16 leave 3.4
        (24.0, 70_000_000_000, "4bit", "(33.6 GB and up in 4bit + 4.8 GB to train exceed 24 GB): use a smaller model or a larger GPU"),
        (None, 70_000_000_000, None, None),  # the CPU: host memory is rarely the limit
    ],
)
def test_a_base_the_gpu_cannot_train_beside(memory, parameters, quantization, words):
    hardware = ("cuda", 1, memory, True) if memory else ()
    config = CLEAN if memory else CLEAN.replace(precision="fp32")
    findings = check_config(config, RunProfile(4000, *hardware, model_parameters=parameters, quantization=quantization))
    assert [f.rule for f in findings] == (["base-too-large"] if words else [])
    assert words is None or words in findings[0].message


def test_batch_cap_counts_only_on_gpus():
    # 64 x 2 per step: 32 steps per epoch, evaluated every 4 (8 per epoch, 24 in the run)
    big = CLEAN.replace(per_device_train_batch_size=64, precision="fp32", eval_steps=4, save_steps=4)
    assert check_config(big, RunProfile(4000)) == []


def test_guide_configs_on_their_own_hardware():
    # each scenario config on the GPU the guide pictures for it (bf16 where it uses bf16)
    hardware = {
        "quick-experiment": RunProfile(4000, "cuda", 1, 8.0, False),
        "standard": RunProfile(4000, "cuda", 1, 16.0, True),
        "production": RunProfile(4000, "cuda", 1, 24.0, True),
        "memory-constrained": RunProfile(4000, "cuda", 1, 4.0, False),
        "time-constrained": RunProfile(4000, "cuda", 1, 24.0, True),
    }
    rules = {name: [f.rule for f in check_config(get_preset(name), profile)] for name, profile in hardware.items()}
    assert rules == {
        "quick-experiment": ["no-early-stopping"],
        # 4000 examples at 16 per step are 750 (standard) or 1250 (production) steps, and
        # the guide's eval_steps of 500 and 1000 evaluate once: patience 3 or 5 never fires
        "standard": ["early-stopping-cannot-fire"],
        "production": ["early-stopping-cannot-fire"],
        "memory-constrained": ["no-early-stopping"],
        "time-constrained": ["no-early-stopping"],
    }


def test_rederive_for_a_full_run():
    found = get_preset("time-constrained").replace(precision="fp32", early_stopping_patience=2)
    profile = RunProfile(200_000, "cuda", 2, 8.0, True)
    config, reasons = rederive_for_dataset(found, profile)
    # 32 per device is over the 16 an 8 GB GPU holds: 16 x 2 accumulation keeps 32 per device-step
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (16, 2)
    # 200,000 / (16 x 2 x 2 devices = 64) = 3125 steps per epoch, 1 epoch: 0.06 warmup
    assert config.warmup_ratio == 0.06
    assert 5 <= 3125 // config.eval_steps <= 10 and config.save_steps == config.eval_steps
    assert config.precision == "bf16" and config.gradient_checkpointing is False
    assert config.learning_rate == found.learning_rate and config.lora == found.lora
    # patience 2 at 8 evaluations per epoch is a quarter epoch: one epoch's 8, capped at 7 to fire within the 1-epoch run's 8
    assert config.early_stopping_patience == 7 and "below the run's 8 so it can fire" in reasons["early_stopping_patience"]
    assert set(reasons) == {"per_device_train_batch_size", "gradient_accumulation_steps", "warmup_ratio", "eval_steps",
                            "save_steps", "logging_steps", "early_stopping_patience", "precision"}
    assert check_config(config, profile) == []


def test_rederive_scales_warmup_cadence_and_patience_to_the_full_run():
    # a trial's settings for its sample: an evaluation every 2 steps, patience 3 of its few evaluations
    trial = CLEAN.replace(eval_steps=2, save_steps=2, logging_steps=1, early_stopping_patience=3)
    profile = RunProfile(40_000, "cuda", 1, 8.0, True)
    config, reasons = rederive_for_dataset(trial, profile)
    # 40,000 / 16 per step = 2,500 steps per epoch, 7,500 in 3 epochs: the guide's 0.06 warmup (1,000-10,000 steps)
    assert config.warmup_ratio == 0.06 and "7,500 steps" in reasons["warmup_ratio"]
    # 8 evaluations per epoch (every 312 steps), 24 in the run; checkpoints follow them
    assert (config.eval_steps, config.save_steps) == (312, 312) and "8 of 2,500 steps" in reasons["eval_steps"]
    # 3 evaluations at 8 per epoch would stop after 3/8 of an epoch without gain: one epoch's 8
    assert config.early_stopping_patience == 8 and "0.38 of an epoch" in reasons["early_stopping_patience"]
    assert check_config(config, profile) == []


@pytest.mark.parametrize(("trial", "full"), [(3, 8), (8, 8), (12, 12), (30, 23), (0, 0)])
def test_rederived_patience_spans_an_epoch_and_can_fire(trial, full):
    # CLEAN on 4000 examples: 8 evaluations per epoch, 24 in its 3 epochs. At least an epoch's
    # 8 (a larger patience is kept), at most 23 so it fires; 0 leaves early stopping off.
    config, reasons = rederive_for_dataset(CLEAN.replace(early_stopping_patience=trial), GPU8)
    assert config.early_stopping_patience == full
    assert ("early_stopping_patience" in reasons) == (trial != full)
    assert [f.rule for f in check_config(config, GPU8)] == (["no-early-stopping"] if trial == 0 else [])


def test_rederive_lowers_a_patience_that_cannot_fire():
    config, reasons = rederive_for_dataset(get_preset("production"), RunProfile(200, "cuda", 1, 24.0, True))
    # 200 examples: per-epoch evaluation, 5 epochs, so 5 evaluations allow patience 4
    assert (config.eval_strategy, config.num_train_epochs, config.early_stopping_patience) == ("epoch", 5, 4)
    assert "5 evaluation(s)" in reasons["early_stopping_patience"]
    assert check_config(config, RunProfile(200, "cuda", 1, 24.0, True)) == []


def test_rederive_clamps_epochs_and_keeps_what_fits():
    config, reasons = rederive_for_dataset(CLEAN.replace(num_train_epochs=1), RunProfile(500, "cuda", 1, 8.0, True))
    assert config.num_train_epochs == 5 and "5-10 epochs" in reasons["num_train_epochs"]
    assert config.eval_strategy == "epoch"
    same, none = rederive_for_dataset(*rederive_for_dataset(CLEAN, GPU8)[:1], GPU8)
    assert none == {}
