"""TrainingConfig and LoraSettings reject values no training can use, with one line."""

import math

import pytest

from lora_search.spaces import LoraSettings, SpaceError, TrainingConfig, load_config_file, load_space


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_train_epochs", math.inf), ("num_train_epochs", math.nan), ("early_stopping_threshold", math.inf),
     ("learning_rate", math.nan), ("weight_decay", -math.inf)],
)
def test_non_finite_numbers_are_rejected(field, value):
    with pytest.raises(SpaceError, match=f"^{field}: must be") as error:
        TrainingConfig(**{field: value})
    assert "\n" not in str(error.value)


def test_non_finite_lora_alpha_is_rejected():
    with pytest.raises(SpaceError, match="lora.lora_alpha: must be a positive finite number, got inf"):
        LoraSettings(lora_alpha=math.inf)


def test_infinite_epochs_in_files(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("training:\n  num_train_epochs: .inf\n")
    with pytest.raises(SpaceError, match="num_train_epochs: must be a positive finite number, got inf"):
        load_config_file(str(config))
    space = tmp_path / "space.yaml"
    space.write_text("extends: standard\ntraining:\n  early_stopping_threshold: .inf\n")
    with pytest.raises(SpaceError, match="training.early_stopping_threshold: must be a non-negative finite number, got inf"):
        load_space(str(space))
