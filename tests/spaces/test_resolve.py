"""Resolved spaces: every sample obeys every rule, for many profiles and many trials."""

import math
import warnings

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import FixedTrial

from lora_search.spaces import RunProfile, SpaceError, check_config, get_preset, load_space
from lora_search.spaces import _rules

SCENARIOS = ["quick-experiment", "standard", "production", "memory-constrained", "time-constrained"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

memory = st.one_of(st.sampled_from([1.0, 3.99, 4.0, 6.0, 7.99, 8.0, 12.0, 15.99, 16.0, 24.0, 80.0]), st.floats(1.0, 200.0))
dataset_sizes = st.one_of(st.sampled_from([1, 999, 1000, 1001, 100_000, 100_001]), st.integers(1, 5_000_000))
profiles = st.one_of(
    st.builds(RunProfile, dataset_size=dataset_sizes),
    st.builds(RunProfile, dataset_size=dataset_sizes, accelerator=st.just("cuda"), devices=st.integers(1, 8),
              gpu_memory_gb=memory, bf16_supported=st.booleans()),
)


def _sampled_configs(resolved, seed, trials):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(trials):
        trial = study.ask()
        config = resolved.sample(trial)
        study.tell(trial, 0.0)
        yield config, study.trials[-1]


def _band_value(spec, band, value):
    """The space range intersected with the guide band holds value, or (no overlap) the nearest bound is taken."""
    low, high = max(spec.low, band[0]), min(spec.high, band[1])
    if low <= high:
        return low <= value <= high
    return value == (spec.high if spec.high < band[0] else spec.low)


@pytest.mark.parametrize("name", SCENARIOS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile=profiles, seed=st.integers(0, 2**16))
def test_every_sample_obeys_every_rule(name, profile, seed):
    space = load_space(name)
    resolved = space.resolve(profile)
    cap = _rules.per_device_batch_cap(profile.gpu_memory_gb)
    for config, trial in _sampled_configs(resolved, seed, 20):
        attrs = trial.user_attrs
        # the guide's common mistakes: none in any sample
        assert check_config(config, profile) == []
        # batch: capped by memory, effective batch in the scenario's band
        batch = config.per_device_train_batch_size
        assert cap is None or batch <= cap
        assert batch in space.params["per_device_train_batch_size"].choices or batch == cap
        effective = batch * config.gradient_accumulation_steps * profile.devices
        assert attrs["derived.effective_batch_size"] == effective
        low, high = space.effective_batch
        if not low <= effective <= high:
            assert name == "time-constrained" and "unreachable" in resolved.get("per_device_train_batch_size").note
        # epochs and weight decay: the space's range within the dataset-size band
        epochs = space.params["num_train_epochs"]
        if epochs.form == "fixed":
            assert config.num_train_epochs == epochs.value
        else:
            assert _band_value(epochs, _rules.epochs_band(profile.dataset_size), config.num_train_epochs)
        assert _band_value(space.params["weight_decay"], _rules.weight_decay_band(profile.dataset_size), config.weight_decay)
        # warmup by total steps, computed here from scratch
        epoch_steps = max(1, math.ceil(profile.dataset_size / effective))
        total = max(1, math.ceil(epoch_steps * config.num_train_epochs))
        assert attrs["derived.total_steps"] == total
        expected_warmup = 0.0 if config.lr_scheduler_type == "constant" else (0.1 if total < 1000 else 0.06 if total <= 10_000 else 0.03)
        assert config.warmup_ratio == expected_warmup == attrs["derived.warmup_ratio"]
        # evaluation cadence
        if profile.dataset_size < 1000:
            assert config.eval_strategy == "epoch" and config.eval_steps == epoch_steps
        else:
            assert config.eval_strategy == "steps"
            per_epoch = epoch_steps // config.eval_steps
            assert 5 <= per_epoch <= 10 if epoch_steps >= 5 else config.eval_steps == 1
        assert config.save_steps == config.eval_steps == attrs["derived.eval_steps"]
        assert config.logging_steps == max(1, config.eval_steps // 4)
        # hardware
        assert config.precision == ("fp32" if profile.accelerator == "cpu" else "bf16" if profile.bf16_supported else "fp16")
        assert config.gradient_checkpointing == (profile.gpu_memory_gb is not None and profile.gpu_memory_gb < 8)
        # learning and LoRA
        lr = space.params["learning_rate"]
        assert lr.low <= config.learning_rate <= lr.high
        assert config.lora.lora_alpha in (config.lora.r, 2 * config.lora.r) and attrs["derived.lora_alpha"] == config.lora.lora_alpha
        assert 0.0 <= config.lora.lora_dropout <= 0.1
        assert config.early_stopping_patience > 0
        # the sample is a point of the space: its params give it back
        assert resolved.sample(FixedTrial(resolved.params_for(config))) == config


@pytest.mark.parametrize("name", SCENARIOS)
@settings(max_examples=30, deadline=None)
@given(profile=profiles)
def test_baseline_lies_in_the_space(name, profile):
    resolved = load_space(name).resolve(profile)
    baseline = resolved.baseline()
    assert resolved.sample(FixedTrial(resolved.params_for(baseline))) == baseline
    assert check_config(baseline, profile) == []


@pytest.mark.parametrize("name", SCENARIOS)
def test_distributions_stay_fixed_through_a_tpe_study(name):
    resolved = load_space(name).resolve(RunProfile(4000, "cuda", 2, 24.0, True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, multivariate=True, n_startup_trials=5))
    study.enqueue_trial(resolved.params_for(resolved.baseline()))
    study.optimize(lambda trial: resolved.sample(trial).learning_rate, n_trials=15)
    assert len(study.trials) == 15 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_baseline_on_the_guides_own_hardware():
    # memory-constrained on its 4 GB GPU without bf16: the guide's numbers come back
    resolved = load_space("memory-constrained").resolve(RunProfile(4000, "cuda", 1, 4.0, False))
    base = resolved.baseline()
    assert (base.per_device_train_batch_size, base.gradient_accumulation_steps, base.learning_rate) == (2, 8, 5e-4)
    assert (base.num_train_epochs, base.precision, base.gradient_checkpointing) == (3, "fp16", True)
    # production on a 24 GB bf16 GPU
    base = load_space("production").resolve(RunProfile(50_000, "cuda", 1, 24.0, True)).baseline()
    assert (base.per_device_train_batch_size, base.gradient_accumulation_steps, base.learning_rate) == (4, 4, 2e-4)
    assert (base.num_train_epochs, base.precision, base.weight_decay, base.early_stopping_patience) == (5, "bf16", 0.01, 5)


def test_baseline_adapts_to_cpu():
    base = load_space("standard").resolve(RunProfile(4000)).baseline()
    preset = get_preset("standard")
    assert base.precision == "fp32" and preset.precision == "bf16"
    # 4000 examples / 16 per step = 250 steps per epoch; 8 evaluations per epoch
    assert (base.eval_steps, base.save_steps, base.logging_steps) == (31, 31, 7)
    assert base.warmup_ratio == 0.1  # 750 steps < 1000


def test_derived_values_are_user_attrs():
    resolved = load_space("memory-constrained").resolve(RunProfile(4000, "cuda", 1, 4.0, False))
    trial = FixedTrial({**resolved.params_for(resolved.baseline()), "effective_batch_size": 32, "per_device_train_batch_size": 4})
    config = resolved.sample(trial)
    assert config.gradient_accumulation_steps == 8  # 32 / (4 per device x 1 device)
    attrs = trial.user_attrs
    assert attrs["derived.gradient_accumulation_steps"] == 8
    assert attrs["derived.effective_batch_size"] == 32
    assert attrs["derived.steps_per_epoch"] == 125  # 4000 / 32
    assert attrs["derived.total_steps"] == 375  # x 3 epochs
    assert attrs["derived.warmup_ratio"] == 0.1
    assert attrs["derived.precision"] == "fp16" and attrs["derived.gradient_checkpointing"] is True
    assert attrs["derived.lora_alpha"] == config.lora.lora_alpha


def test_memory_cap_wins_over_the_space():
    resolved = load_space("time-constrained").resolve(RunProfile(4000, "cuda", 1, 6.0, False))
    per_device = resolved.get("per_device_train_batch_size")
    assert (per_device.kind, per_device.value) == ("fixed", 4)
    assert "memory wins" in per_device.note and "unreachable" in per_device.note


def test_space_wins_over_the_dataset_band():
    # quick-experiment allows 1-2 epochs; 500 examples would want 5-10
    epochs = load_space("quick-experiment").resolve(RunProfile(500)).get("num_train_epochs")
    assert (epochs.kind, epochs.value) == ("fixed", 2)
    assert "the space wins" in epochs.note


def test_intersection_narrows():
    resolved = load_space("production").resolve(RunProfile(200_000))
    assert resolved.get("num_train_epochs").value == 3  # 3..10 within 1..3
    decay = resolved.get("weight_decay")
    assert (decay.low, decay.high) == (0.001, 0.01)
    assert load_space("standard").resolve(RunProfile(50_000)).get("num_train_epochs").low == 3


def test_devices_shape_the_batch_plan():
    resolved = load_space("standard").resolve(RunProfile(4000, "cuda", 2, 24.0, True))
    assert resolved.get("per_device_train_batch_size").choices == (4, 8)
    assert resolved.get("effective_batch_size").choices == (16, 32, 64, 128)
    many = load_space("standard").resolve(RunProfile(4000, "cuda", 8, 24.0, True))
    assert many.get("effective_batch_size").choices == (32, 64, 128)


def test_fixed_precision_the_hardware_cannot_run(tmp_path):
    path = tmp_path / "bf16.yaml"
    path.write_text("extends: standard\ntraining:\n  precision: bf16\n")
    with pytest.raises(SpaceError, match="training.precision: bf16 cannot run on this CPU"):
        load_space(str(path)).resolve(RunProfile(4000))
    assert load_space(str(path)).resolve(RunProfile(4000, "cuda", 1, 24.0, True)).get("precision").value == "bf16"


def test_params_for_rejects_configs_outside_the_space():
    resolved = load_space("memory-constrained").resolve(RunProfile(4000))
    with pytest.raises(SpaceError, match="per_device_train_batch_size = 16 is not one of 2, 4"):
        resolved.params_for(get_preset("standard").replace(per_device_train_batch_size=16))
    with pytest.raises(SpaceError, match="learning_rate = 0.01 is outside"):
        resolved.params_for(resolved.baseline().replace(learning_rate=0.01))
    with pytest.raises(SpaceError, match="precision is fp16, but for 4,000 training examples, cpu the space gives fp32"):
        resolved.params_for(resolved.baseline().replace(precision="fp16"))


def test_rows_cover_every_parameter():
    rows = load_space("memory-constrained").resolve(RunProfile(4000, "cuda", 1, 4.0, False)).rows()
    names = [row[0] for row in rows]
    assert names[:4] == ["num_train_epochs", "per_device_train_batch_size", "effective_batch_size", "gradient_accumulation_steps"]
    assert "lora.lora_alpha" in names and "warmup_ratio" in names
    table = dict((row[0], row[1]) for row in rows)
    assert table["per_device_train_batch_size"] == "one of 2, 4"
    assert table["precision"] == "= fp16 (rule)"
    assert table["learning_rate"] == "0.0001 .. 0.001 (log)"
