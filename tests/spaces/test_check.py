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
        ({"precision": "fp32"}, "wrong-precision", "use bf16"),
        ({"precision": "fp16"}, "wrong-precision", "use bf16"),
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
    # per-epoch evaluation is never too frequent
    assert check_config(CLEAN.replace(eval_strategy="epoch", eval_steps=1, save_steps=1), GPU8) == []


def test_precision_by_hardware():
    cpu = RunProfile(4000)
    assert [f.rule for f in check_config(CLEAN, cpu)] == ["wrong-precision"]
    assert check_config(CLEAN.replace(precision="fp32"), cpu) == []
    old_gpu = RunProfile(4000, "cuda", 1, 16.0, False)
    assert "cannot compute in bf16" in check_config(CLEAN, old_gpu)[0].message
    assert check_config(CLEAN.replace(precision="fp16"), old_gpu) == []


def test_batch_cap_counts_only_on_gpus():
    assert check_config(CLEAN.replace(per_device_train_batch_size=64, precision="fp32"), RunProfile(4000)) == []


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
        "standard": [],
        "production": [],
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
    assert set(reasons) == {"per_device_train_batch_size", "gradient_accumulation_steps", "warmup_ratio", "eval_steps",
                            "save_steps", "logging_steps", "precision"}
    assert check_config(config, profile) == []


def test_rederive_clamps_epochs_and_keeps_what_fits():
    config, reasons = rederive_for_dataset(CLEAN.replace(num_train_epochs=1), RunProfile(500, "cuda", 1, 8.0, True))
    assert config.num_train_epochs == 5 and "5-10 epochs" in reasons["num_train_epochs"]
    assert config.eval_strategy == "epoch"
    same, none = rederive_for_dataset(*rederive_for_dataset(CLEAN, GPU8)[:1], GPU8)
    assert none == {}
