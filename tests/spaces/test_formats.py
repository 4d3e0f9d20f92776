"""Other trainers' config files read as lora-search settings: Hugging Face and axolotl."""

import json

import pytest
import yaml

from lora_search.spaces import LoraSettings, SpaceError, TrainingConfig, load_config_file
from lora_search.spaces._formats import AXOLOTL_IGNORED, HF_IGNORED

EXPECTED = TrainingConfig(
    num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=4, learning_rate=2e-4,
    weight_decay=0.0, warmup_ratio=0.05, lr_scheduler_type="cosine", precision="bf16", gradient_checkpointing=True,
    eval_strategy="steps", eval_steps=50, save_steps=50, logging_steps=10, early_stopping_patience=3,
    lora=LoraSettings(r=16, lora_alpha=32, lora_dropout=0.1, target_modules="all-linear", use_rslora=True),
)
AXOLOTL = """\
base_model: meta-llama/Llama-3.2-1B
datasets:
  - path: mhenrichsen/alpaca_2k_test
    type: alpaca
output_dir: ./outputs/lora-out
sequence_len: 2048
seed: 42
adapter: lora
micro_batch_size: 4
gradient_accumulation_steps: 4
learning_rate: 2e-4
num_epochs: 2
lr_scheduler: cosine
warmup_ratio: 0.05
weight_decay: 0.0
lora_r: 16
lora_alpha: 32
lora_dropout: 0.1
lora_target_linear: true
lora_target_modules: [q_proj, gate_proj]
peft_use_rslora: true
bf16: true
fp16: false
gradient_checkpointing: true
early_stopping_patience: 3
eval_steps: 50
save_steps: 50
logging_steps: 10
wandb_project: my-project
"""
HF = {
    "output_dir": "out", "seed": 7, "report_to": "none", "num_train_epochs": 2, "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4, "learning_rate": 2e-4, "weight_decay": 0.0, "warmup_steps": 0.05,
    "lr_scheduler_type": "cosine", "bf16": True, "fp16": False, "gradient_checkpointing": True,
    "eval_strategy": "steps", "eval_steps": 50, "save_steps": 50, "logging_steps": 10,
    "load_best_model_at_end": True,
}
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "target_modules": "all-linear", "use_rslora": True,
        "bias": "none", "task_type": "CAUSAL_LM"}


def _write(tmp_path, name, document):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document) if name.endswith(".json") else yaml.safe_dump(document))
    return path


def test_axolotl_yaml_maps_to_the_same_settings(tmp_path):
    # lora_target_linear adds the listed modules to every linear layer: all-linear
    assert load_config_file(_write(tmp_path, "axolotl.yaml", AXOLOTL)) == EXPECTED


@pytest.mark.parametrize("name", ["args.json", "args.yaml"])
@pytest.mark.parametrize("layout", ["flat", "lora_config", "exported"])
def test_hugging_face_arguments_map_to_the_same_settings(tmp_path, name, layout):
    document = {
        "flat": {**HF, **LORA},
        "lora_config": {**HF, "lora_config": LORA},
        # what 'export --format hf' writes
        "exported": {"training_arguments": HF, "lora_config": LORA, "early_stopping": {"early_stopping_patience": 3}},
    }[layout]
    patience = 3 if layout == "exported" else 0
    assert load_config_file(_write(tmp_path, name, document)) == EXPECTED.replace(early_stopping_patience=patience)


def test_the_other_names_of_a_setting(tmp_path):
    config = load_config_file(_write(tmp_path, "a.yaml", {
        "output_dir": "o", "evaluation_strategy": "epoch", "activation_checkpointing": True, "fp16": True,
        "warmup_ratio": 0.0, "target_modules": ["query", "value"],
    }))
    assert (config.eval_strategy, config.gradient_checkpointing, config.precision, config.warmup_ratio) == ("epoch", True, "fp16", 0.0)
    assert config.lora.target_modules == "attention"
    axolotl = load_config_file(_write(tmp_path, "b.yaml", {"micro_batch_size": 2, "evals_per_epoch": 1, "lora_target_modules": ["q_proj", "v_proj"]}))
    assert (axolotl.per_device_train_batch_size, axolotl.eval_strategy, axolotl.lora.target_modules) == (2, "epoch", "attention")


def test_ignored_keys_are_ignored(tmp_path):
    assert load_config_file(_write(tmp_path, "hf.json", {key: "x" for key in HF_IGNORED})) == TrainingConfig()
    axolotl = {key: "x" for key in AXOLOTL_IGNORED}
    assert load_config_file(_write(tmp_path, "ax.json", {**axolotl, "adapter": "lora"})) == TrainingConfig()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"output_dir": "o", "max_stepz": 1, "foo": 2, "learning_rate": 0.1},
         "unknown Hugging Face TrainingArguments/LoraConfig keys 'foo', 'max_stepz': lora-search reads .* and ignores .*output_dir"),
        ({"micro_batch_size": 2, "lora_rr": 8, "zz": 1}, "unknown axolotl keys 'lora_rr' \\(did you mean 'lora_r'\\?\\), 'zz': "),
        ({"finetuning_type": "lora", "lora_rank": 8}, "a LLaMA-Factory config, which lora-search writes .* but does not read back"),
        ({"output_dir": "o", "warmup_steps": 100}, "warmup_steps: 100 is a number of steps.*write warmup_ratio"),
        ({"output_dir": "o", "bf16": True, "fp16": True}, "bf16 and fp16 both set precision, differently: keep one"),
        ({"output_dir": "o", "bf16": "auto"}, "bf16: must be true or false, got 'auto'"),
        ({"output_dir": "o", "target_modules": ["q_proj", "down_proj"]}, "target_modules: .*write 'all-linear'"),
        ({"output_dir": "o", "eval_strategy": "no"}, "eval_strategy: must be one of steps, epoch, got 'no'"),
        ({"output_dir": "o", "lr": 1, "lora_config": {"r": 8}, "r": 4}, "'r' given twice, in 'lora_config' and beside it"),
        ({"micro_batch_size": 2, "evals_per_epoch": 4}, "evals_per_epoch: 4 evaluations per epoch.*write eval_steps"),
        ({"micro_batch_size": 2, "adapter": "qlora"}, "adapter: lora-search trains 'lora' adapters, got 'qlora'"),
        ({"micro_batch_size": 2, "lora_r": 0}, "lora.r: must be a positive integer"),
    ],
)
def test_problems_name_the_file_and_every_unknown_key(tmp_path, document, message):
    path = _write(tmp_path, "c.json", document)
    with pytest.raises(SpaceError, match=message) as error:
        load_config_file(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_numbers_as_text_are_numbers_in_yaml_text_in_json(tmp_path):
    assert load_config_file(_write(tmp_path, "a.yaml", "micro_batch_size: 2\nlearning_rate: 1e-5\n")).learning_rate == 1e-5
    with pytest.raises(SpaceError, match="learning_rate: must be a number"):
        load_config_file(_write(tmp_path, "a.json", {"micro_batch_size": 2, "learning_rate": "1e-5"}))
