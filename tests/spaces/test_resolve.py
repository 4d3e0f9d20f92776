"""Resolved spaces: every sample obeys every rule, for many profiles and many trials."""

import math
import warnings

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import FixedTrial

from lora_search.spaces import RunProfile, SpaceError, check_config, get_preset, load_space, rederive_for_dataset
from lora_search.spaces import _rules

SCENARIOS = ["quick-experiment", "standard", "production", "memory-constrained", "time-constrained"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

memory = st.one_of(st.sampled_from([1.0, 3.99, 4.0, 6.0, 7.99, 8.0, 12.0, 15.99, 16.0, 24.0, 80.0]), st.floats(1.0, 200.0))
dataset_sizes = st.one_of(st.sampled_from([1, 999, 1000, 1001, 100_000, 100_001]), st.integers(1, 5_000_000))
model_sizes = st.one_of(st.none(), st.sampled_from([4_400_000, 110_000_000, 150_000_000, 150_000_001, 7 * 10**9, 12_500_000_000, 70 * 10**9]))
profiles = st.one_of(
    st.builds(RunProfile, dataset_size=dataset_sizes, model_parameters=model_sizes),
    st.builds(RunProfile, dataset_size=dataset_sizes, accelerator=st.just("cuda"), devices=st.integers(1, 8),
              gpu_memory_gb=memory, bf16_supported=st.booleans(), model_parameters=model_sizes),
)


def _profile_findings(profile):
    """What check_config finds whatever the config: a base the GPU cannot train beside."""
    parameters, memory = profile.model_parameters, profile.gpu_memory_gb
    storage = _rules.precision_for(profile.accelerator, profile.bf16_supported)
    return ["base-too-large"] if parameters and memory and not _rules.base_fits(parameters, storage, memory) else []


def _sampled_configs(resolved, seed, trials):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(trials):
        trial = study.ask()
        config = resolved.sample(trial)
        study.tell(trial, 0.0)
        yield config, study.trials[-1]


def _band_value(spec, band, value):
    """The space range intersected with the guide band holds value, or (no overlap) the band's bound nearest the space."""
    if band is None:
        return spec.low <= value <= spec.high
    low, high = max(spec.low, band[0]), min(spec.high, band[1])
    if low <= high:
        return low <= value <= high
    return value == (band[0] if spec.high < band[0] else band[1])


@pytest.mark.parametrize("name", SCENARIOS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile=profiles, seed=st.integers(0, 2**16))
def test_every_sample_obeys_every_rule(name, profile, seed):
    space = load_space(name)
    resolved = space.resolve(profile)
    floor, cap = _rules.per_device_batch_band(profile.gpu_memory_gb) or (None, None)
    choices = space.params["per_device_train_batch_size"].choices
    for config, trial in _sampled_configs(resolved, seed, 20):
        attrs = trial.user_attrs
        # the guide's common mistakes: none in any sample
        assert [f.rule for f in check_config(config, profile)] == _profile_findings(profile)
        # batch: the guide's row for the GPU (its top a hard limit; under its bottom only
        # where every choice of the space is), effective batch in the scenario's band
        batch = config.per_device_train_batch_size
        assert cap is None or batch <= cap
        assert floor is None or batch >= floor or all(c < floor for c in choices if c <= cap)
        assert batch in choices or batch == cap
        effective = batch * config.gradient_accumulation_steps * profile.devices
        assert attrs["derived.effective_batch_size"] == effective
        low, high = space.effective_batch
        if not low <= effective <= high:
            # only where the band cannot be met, and the note says so: with accumulation fixed
            # (time-constrained), or when the GPUs' smallest step (the row's floor x devices) is above it
            note = resolved.get("per_device_train_batch_size").note
            if name == "time-constrained":
                assert "unreachable" in note
            else:
                assert effective == batch * profile.devices > high and f"no {effective} x 2^k in the band" in note
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
        assert config.logging_steps == max(1, min(config.eval_steps // 4, 200))
        # early stopping can fire: patience below the run's evaluations (lowered where needed)
        evaluations = math.ceil(config.num_train_epochs) if config.eval_strategy == "epoch" else total // config.eval_steps
        assert attrs["derived.evaluations"] == evaluations
        patience = space.params["early_stopping_patience"].value
        assert config.early_stopping_patience == min(patience, evaluations - 1)
        # hardware
        assert config.precision == ("fp32" if profile.accelerator == "cpu" else "bf16" if profile.bf16_supported else "fp16")
        assert config.gradient_checkpointing == (profile.gpu_memory_gb is not None and profile.gpu_memory_gb < 8)
        # learning rate: the space's range within the band for the model size
        assert _band_value(space.params["learning_rate"], _rules.learning_rate_band(profile.model_parameters), config.learning_rate)
        # LoRA
        assert config.lora.lora_alpha in (config.lora.r, 2 * config.lora.r) and attrs["derived.lora_alpha"] == config.lora.lora_alpha
        assert 0.0 <= config.lora.lora_dropout <= 0.1
        # the sample is a point of the space: its params give it back
        assert resolved.sample(FixedTrial(resolved.params_for(config))) == config


@pytest.mark.parametrize("name", SCENARIOS)
@settings(max_examples=30, deadline=None)
@given(profile=profiles)
def test_baseline_lies_in_the_space(name, profile):
    resolved = load_space(name).resolve(profile)
    baseline = resolved.baseline()
    assert resolved.sample(FixedTrial(resolved.params_for(baseline))) == baseline
    assert [f.rule for f in check_config(baseline, profile)] == _profile_findings(profile)


@pytest.mark.parametrize("name", SCENARIOS)
@settings(max_examples=20, deadline=None)
@given(profile=profiles)
def test_the_guide_is_the_preset_itself_fitted_to_the_profile(name, profile):
    space = load_space(name)
    resolved, preset = space.resolve(profile), get_preset(space.baseline_preset)
    guide = resolved.guide()
    # what the preset chose stays, inside the space or not (each steps with 16 examples)
    assert (guide.learning_rate, guide.effective_batch_size, guide.lora) == (preset.learning_rate, preset.effective_batch_size, preset.lora)
    shown = resolved.values_of(guide)  # under the names of the parameters this profile searches
    assert shown.get("learning_rate", preset.learning_rate) == preset.learning_rate
    assert shown.get("effective_batch_size", 16 * profile.devices) == 16 * profile.devices
    # what follows from the data and the machine is fitted, as `train --fit-to-data` fits it:
    # fitting again changes nothing
    assert rederive_for_dataset(guide, profile) == (guide, {})
    low, high = _rules.epochs_band(profile.dataset_size)
    assert low <= guide.num_train_epochs <= high


@pytest.mark.parametrize("name", SCENARIOS)
def test_values_of_a_config_in_the_space_are_its_params(name):
    resolved = load_space(name).resolve(RunProfile(4000))
    assert resolved.values_of(resolved.baseline()) == resolved.params_for(resolved.baseline())


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
    # production on a 24 GB bf16 GPU: the guide's 4 x 4 = 16 sits under its own 16-32 row
    # and its 32-128 target, which the space follows: 16 per device, 2 passes, 32 per step
    base = load_space("production").resolve(RunProfile(50_000, "cuda", 1, 24.0, True)).baseline()
    assert (base.per_device_train_batch_size, base.gradient_accumulation_steps, base.learning_rate) == (16, 2, 2e-4)
    assert (base.num_train_epochs, base.precision, base.weight_decay, base.early_stopping_patience) == (5, "bf16", 0.01, 5)


def test_baseline_adapts_to_cpu():
    base = load_space("standard").resolve(RunProfile(4000)).baseline()
    preset = get_preset("standard")
    assert base.precision == "fp32" and preset.precision == "bf16"
    # the guide's 16 per step snaps to its 32-128 target: 4000 / 32 = 125 steps per epoch,
    # evaluated every 15 (8 per epoch)
    assert base.effective_batch_size == 32
    assert (base.eval_steps, base.save_steps, base.logging_steps) == (15, 15, 3)
    assert base.warmup_ratio == 0.1  # 375 steps < 1000


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


def test_dataset_band_wins_over_the_space():
    # quick-experiment allows 1-2 epochs; the guide gives 5-10 under 1K examples, 3-5 up to 100K
    for size, value in ((200, 5), (500, 5), (4000, 3)):
        epochs = load_space("quick-experiment").resolve(RunProfile(size)).get("num_train_epochs")
        assert (epochs.kind, epochs.value) == ("fixed", value)
        assert "the guide wins, nearest bound" in epochs.note
    # large data: the space's 1-2 lies within the guide's 1-3
    epochs = load_space("quick-experiment").resolve(RunProfile(200_000)).get("num_train_epochs")
    assert (epochs.kind, epochs.low, epochs.high) == ("int", 1, 2)


def test_quick_experiment_on_small_data_can_stop_early():
    # 200 examples: 5 per-epoch evaluations, so the guide's aggressive patience 2 can fire
    resolved = load_space("quick-experiment").resolve(RunProfile(200))
    base = resolved.baseline()
    assert (base.num_train_epochs, base.eval_strategy, base.early_stopping_patience) == (5, "epoch", 2)
    assert check_config(base, RunProfile(200)) == []


def test_patience_is_lowered_where_a_trial_evaluates_too_little():
    # production keeps patience 5; 200 examples over 5 epochs evaluate 5 times: 4 can fire
    resolved = load_space("production").resolve(RunProfile(200))
    trial = FixedTrial({**resolved.params_for(resolved.baseline()), "num_train_epochs": 5})
    assert resolved.sample(trial).early_stopping_patience == 4
    assert trial.user_attrs["derived.evaluations"] == 5
    six = resolved.sample(FixedTrial({**resolved.params_for(resolved.baseline()), "num_train_epochs": 6}))
    assert six.early_stopping_patience == 5
    assert "lowered to evaluations - 1" in resolved.get("early_stopping_patience").note


def test_searched_patience_maps_back(tmp_path):
    path = tmp_path / "patience.yaml"
    path.write_text("extends: time-constrained\ntraining:\n  early_stopping_patience: {choices: [2, 3, 5]}\n")
    resolved = load_space(str(path)).resolve(RunProfile(200))  # 1 epoch, 1 evaluation: patience 0
    config = resolved.sample(FixedTrial({**resolved.params_for(resolved.baseline()), "early_stopping_patience": 3}))
    assert config.early_stopping_patience == 0
    assert resolved.sample(FixedTrial(resolved.params_for(config))) == config


def test_intersection_narrows():
    resolved = load_space("production").resolve(RunProfile(200_000))
    assert resolved.get("num_train_epochs").value == 3  # 3..10 within 1..3
    decay = resolved.get("weight_decay")
    assert (decay.low, decay.high) == (0.001, 0.01)
    assert load_space("standard").resolve(RunProfile(50_000)).get("num_train_epochs").low == 3


def test_devices_shape_the_batch_plan():
    one = load_space("standard").resolve(RunProfile(4000, "cuda", 1, 24.0, True))
    assert one.get("per_device_train_batch_size").choices == (16, 32)
    assert one.get("effective_batch_size").choices == (32, 64, 128)
    # 2 x 16 = 32 is the smallest step; 32 per device (64 a pass) does not divide it
    two = load_space("standard").resolve(RunProfile(4000, "cuda", 2, 24.0, True))
    per_device = two.get("per_device_train_batch_size")
    assert (per_device.kind, per_device.value) == ("fixed", 16) and "32 left out" in per_device.note
    assert two.get("effective_batch_size").choices == (32, 64, 128)
    many = load_space("standard").resolve(RunProfile(4000, "cuda", 8, 24.0, True))
    assert many.get("effective_batch_size").value == 128


@pytest.mark.parametrize(
    ("name", "memory", "choices"),
    [("standard", 8.0, (8, 16)), ("standard", 16.0, (16, 32)), ("standard", 4.0, (4,)), ("quick-experiment", 80.0, (16, 32)),
     ("production", 12.0, (8, 16)), ("memory-constrained", 4.0, (2, 4)), ("memory-constrained", 3.0, (2,))],
)
def test_per_device_batch_follows_the_guides_row(name, memory, choices):
    per_device = load_space(name).resolve(RunProfile(4000, "cuda", 1, memory, True)).get("per_device_train_batch_size")
    assert (per_device.choices or (per_device.value,)) == choices


def test_small_batch_space_keeps_its_choices_on_a_large_gpu():
    per_device = load_space("memory-constrained").resolve(RunProfile(4000, "cuda", 1, 24.0, True)).get("per_device_train_batch_size")
    assert per_device.choices == (2, 4)
    assert "under the guide's 16-32 for 24 GB: the space wins" in per_device.note


def test_cpu_keeps_every_batch_choice():
    per_device = load_space("standard").resolve(RunProfile(4000)).get("per_device_train_batch_size")
    assert per_device.choices == (4, 8, 16, 32) and "no GPU memory limit" in per_device.note


def test_effective_band_names_the_guides_rule():
    standard = load_space("standard").resolve(RunProfile(4000)).get("effective_batch_size")
    assert standard.choices == (32, 64, 128) and "the guide's 32-128 target for most tasks" in standard.note
    memory = load_space("memory-constrained").resolve(RunProfile(4000)).get("effective_batch_size")
    assert memory.choices == (8, 16, 32) and "8-32 for short memory (2-4 per device x 4-8 accumulation), over its 32-128 target" in memory.note
    timed = load_space("time-constrained").resolve(RunProfile(4000, "cuda", 1, 24.0, True)).get("per_device_train_batch_size")
    assert timed.value == 32 and "32-128 target" in timed.note


@pytest.mark.parametrize(
    ("name", "parameters", "expected"),
    [
        ("standard", None, (1e-4, 1e-3)),
        ("standard", 7 * 10**9, (1e-4, 1e-3)),  # no band for 7B
        ("standard", 13 * 10**9, (1e-4, 3e-4)),
        ("standard", 110 * 10**6, (5e-4, 1e-3)),
        ("quick-experiment", 110 * 10**6, (5e-4, 1e-3)),
        ("quick-experiment", 13 * 10**9, 3e-4),  # overlap in one point
        ("production", 110 * 10**6, 5e-4),
        ("time-constrained", 70 * 10**9, 3e-4),  # 5e-4..2e-3 misses 1e-4..3e-4: the guide wins
    ],
)
def test_learning_rate_by_model_size(name, parameters, expected):
    rate = load_space(name).resolve(RunProfile(4000, model_parameters=parameters)).get("learning_rate")
    if isinstance(expected, tuple):
        assert (rate.kind, rate.low, rate.high) == ("float", *expected)
    else:
        assert (rate.kind, rate.value) == ("fixed", expected)
    if parameters is not None:
        assert "-parameter model" in rate.note


def test_learning_rate_rule_alone(tmp_path):
    path = tmp_path / "rate.yaml"
    path.write_text("extends: standard\ntraining:\n  learning_rate: {rule: model-size}\n")
    space = load_space(str(path))
    big = space.resolve(RunProfile(4000, model_parameters=13 * 10**9)).get("learning_rate")
    assert (big.low, big.high, big.log) == (1e-4, 3e-4, True)
    unknown = space.resolve(RunProfile(4000)).get("learning_rate")
    assert (unknown.low, unknown.high) == (1e-4, 1e-3) and "no model-size band" in unknown.note


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
