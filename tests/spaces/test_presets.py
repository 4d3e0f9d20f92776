"""The guide's five scenario configs, number for number, its Step 2 names, and the one preset reader."""

import dataclasses
import json
from importlib import resources

import pytest
import yaml

from lora_search.spaces import SpaceError, TrainingConfig, get_preset, load_config_file, preset_names, read_preset_file
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
    ("name", "text", "message"),
    [
        ("c.yaml", "learning_rate: [1", "not valid YAML \\(line"),
        ("c.yaml", "lerning_rate: 0.1", "unknown training setting 'lerning_rate'"),
        ("c.yaml", "training: {}\nlora: {r: 8}\n" "extra: 1\n", None),
        ("c.yaml", "training: {lora: {r: 8}}\nlora: {r: 4}\n", "given twice"),
        ("c.yaml", "- 1\n- 2\n", "expected a mapping"),
        ("c.yaml", "learning_rate: 1e-5\n", "'1e-5' was read as text.*write 1.0e-5"),
        ("c.yaml", "training:\n  weight_decay: '0.01'\n", "'0.01' was read as text"),
        ("c.yaml", "config: {}\ntraining: {}\n", "given twice, under 'config' and 'training'"),
        ("c.json", '{"learning_rate": 0.1,}', "not valid JSON \\(line 1"),
        ("c.json", '{"learning_rate": "1e-5"}', "learning_rate: must be a number"),  # JSON text is text: no YAML hint
        ("c.json", "[1, 2]", "expected a mapping"),
        ("c.json", '{"config": {"lora": {"r": 4}}, "lora": {"r": 8}}', "given twice, under 'lora' and 'config.lora'"),
    ],
)
def test_config_file_problems(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    if message is None:
        assert load_config_file(path).lora.r == 8
        return
    with pytest.raises(SpaceError, match=message) as error:
        load_config_file(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_config_file_missing(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        load_config_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_reader_takes_an_exported_document(tmp_path, suffix):
    config = get_preset("standard").replace(learning_rate=1e-5, lora={"r": 16, "lora_alpha": 32})
    # the layout 'lora-search export' writes (see lora_search._presets)
    document = {
        "name": "mine",
        "config": config.to_dict(),
        "trial_config": config.replace(num_train_epochs=1).to_dict(),
        "rederived": {"num_train_epochs": {"trial": 1, "full": config.num_train_epochs, "reason": "guide: 3-5 epochs"}},
        "provenance": {"study": "s", "trial": 4, "metric": "eval_loss", "value": 0.25},
    }
    path = tmp_path / f"mine{suffix}"
    path.write_text(json.dumps(document) if suffix == ".json" else yaml.safe_dump(document))
    assert read_preset_file(path) == (config, document)
    assert load_config_file(path) == config


@pytest.mark.parametrize("name", preset_names())
def test_reader_takes_built_in_files_and_their_copies(tmp_path, name):
    builtin = resources.files("lora_search.spaces") / "presets" / f"{name}.yaml"
    copy = tmp_path / f"copy-of-{name}.yaml"
    copy.write_text(builtin.read_text())
    with resources.as_file(builtin) as path:
        assert load_config_file(path) == get_preset(name)
    config, document = read_preset_file(copy)
    assert config == get_preset(name) and ("training" in document or "alias_of" in document)


def test_yaml_merge_keys_may_be_overridden_but_a_key_given_twice_is_refused():
    from lora_search.spaces._presets import read_yaml_text

    assert read_yaml_text("a: &x {b: 1, c: 1}\nd:\n  <<: *x\n  b: 2\n", "f.yaml") == {"a": {"b": 1, "c": 1}, "d": {"b": 2, "c": 1}}
    with pytest.raises(SpaceError, match=r"^f.yaml: not valid YAML \(line 1, column 15\): key 'b' is given twice in one mapping$"):
        read_yaml_text("a: [1, {b: 1, b: 2}]\n", "f.yaml")
