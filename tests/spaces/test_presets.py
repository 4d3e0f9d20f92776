"""The guide's five scenario configs, number for number, and its Step 2 names."""

import dataclasses

import pytest

from lora_search.spaces import SpaceError, TrainingConfig, get_preset, load_config_file, preset_names
from lora_search.spaces._presets import alias_target

DEFAULTS = TrainingConfig()


def _differences(config):
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(DEFAULTS, f.name)}


# Everything each guide config sets, and only that (the rest are TrainingConfig's defaults).
GUIDE = {
    "quick-experiment": dict(num_train_epochs=1, per_device_train_batch_size=16, gradient_accumulation_steps=1,
                             learning_rate=1e-3, eval_steps=100, save_steps=100, logging_steps=50, precision="fp16",
                             gradient_checkpointing=False),
    "standard": dict(num_train_epochs=3, per_device_train_batch_size=8, gradient_accumulation_steps=2,
                     learning_rate=5e-4, eval_steps=500, save_steps=500, logging_steps=100, precision="bf16",
                     gradient_checkpointing=False, early_stopping_patience=3),
    "production": dict(num_train_epochs=5, per_device_train_batch_size=4, gradient_accumulation_steps=4,
                       learning_rate=2e-4, eval_steps=1000, save_steps=1000, logging_steps=200, precision="bf16",
                       gradient_checkpointing=False, early_stopping_patience=5, weight_decay=0.01),
    "memory-constrained": dict(num_train_epochs=3, per_device_train_batch_size=2, gradient_accumulation_steps=8,
                               learning_rate=5e-4, eval_steps=200, save_steps=200, logging_steps=50, precision="fp16",
                               gradient_checkpointing=True, dataloader_num_workers=2),
    "time-constrained": dict(num_train_epochs=1, per_device_train_batch_size=32, gradient_accumulation_steps=1,
                             learning_rate=1e-3, eval_steps=50, save_steps=50, logging_steps=25, precision="bf16",
                             gradient_checkpointing=False),
}


@pytest.mark.parametrize("name", sorted(GUIDE))
def test_every_number_of_the_guide(name):
    preset = get_preset(name)
    for field, value in GUIDE[name].items():
        got = getattr(preset, field)
        assert got == value and type(got) is type(value), (name, field, got)
    set_by_guide = set(GUIDE[name])
    assert set(_differences(preset)) <= set_by_guide
    assert preset.lora == DEFAULTS.lora


def test_memory_constrained_effective_batch_is_sixteen():
    assert get_preset("memory-constrained").effective_batch_size == 16


def test_step_two_names_are_aliases_in_data():
    assert preset_names() == sorted({"quick", "standard", "intensive", *GUIDE})
    assert alias_target("quick") == "quick-experiment"
    assert alias_target("intensive") == "production"
    assert alias_target("standard") is None
    assert get_preset("quick") == get_preset("quick-experiment")
    assert get_preset("intensive") == get_preset("production")


def test_unknown_preset_lists_names():
    with pytest.raises(SpaceError, match="unknown preset 'fast'.*intensive.*quick"):
        get_preset("fast")


def test_config_file_sectioned_and_flat(tmp_path):
    sectioned = tmp_path / "p.yaml"
    sectioned.write_text("name: mine\nprovenance: {study: s}\ntraining:\n  learning_rate: 3.0e-4\nlora:\n  r: 16\n  lora_alpha: 32\n")
    config = load_config_file(sectioned)
    assert (config.learning_rate, config.lora.r, config.lora.lora_alpha) == (3e-4, 16, 32)
    flat = tmp_path / "f.yaml"
    flat.write_text("learning_rate: 3.0e-4\nlora: {r: 16}\n")
    assert load_config_file(flat).lora.r == 16


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate: [1", "not valid YAML \\(line"),
        ("lerning_rate: 0.1", "unknown training setting 'lerning_rate'"),
        ("training: {}\nlora: {r: 8}\n" "extra: 1\n", None),
        ("training: {lora: {r: 8}}\nlora: {r: 4}\n", "given twice"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("learning_rate: 1e-5\n", "'1e-5' was read as text.*write 1.0e-5"),
        ("training:\n  weight_decay: '0.01'\n", "'0.01' was read as text"),
    ],
)
def test_config_file_problems(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    if message is None:
        assert load_config_file(path).lora.r == 8
        return
    with pytest.raises(SpaceError, match=message) as error:
        load_config_file(path)
    assert str(path) in str(error.value)


def test_config_file_missing(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        load_config_file(tmp_path / "absent.yaml")
