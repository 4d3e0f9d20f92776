"""Other trainers' config files read as lora-search settings: Hugging Face and axolotl.

- Hugging Face: ``TrainingArguments`` keys, with peft ``LoraConfig`` keys (r, lora_alpha,
  ...) and ``EarlyStoppingCallback``'s beside them or under ``lora_config:`` and
  ``early_stopping:``; ``lora-search export --format hf`` writes ``training_arguments:``,
  ``lora_config:`` and ``early_stopping:`` sections, read back here too.
- axolotl: its YAML (micro_batch_size, num_epochs, lora_r, ...).

Each table maps the trainer's key to the lora-search setting it sets (``lora.`` for the
adapter); keys that other trainers need but that mean nothing to a TrainingConfig (the
model, data, output folder, seed, logging services, ...) are in the ignored lists. Any
other key is an error, all of them named at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ._errors import SpaceError
from ._training_config import TARGET_MODULE_PRESETS, TrainingConfig
from ._units import number_as_text

HF_KEYS = {
    "num_train_epochs": "num_train_epochs",
    "per_device_train_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_ratio",
    "warmup_steps": "warmup_ratio",
    "lr_scheduler_type": "lr_scheduler_type",
    "bf16": "precision",
    "fp16": "precision",
    "gradient_checkpointing": "gradient_checkpointing",
    "activation_checkpointing": "gradient_checkpointing",
    "eval_strategy": "eval_strategy",
    "evaluation_strategy": "eval_strategy",
    "eval_steps": "eval_steps",
    "save_steps": "save_steps",
    "logging_steps": "logging_steps",
    "dataloader_num_workers": "dataloader_num_workers",
    "early_stopping_patience": "early_stopping_patience",
    "early_stopping_threshold": "early_stopping_threshold",
    "r": "lora.r",
    "lora_alpha": "lora.lora_alpha",
    "lora_dropout": "lora.lora_dropout",
    "target_modules": "lora.target_modules",
    "use_rslora": "lora.use_rslora",
    "use_dora": "lora.use_dora",
}
HF_IGNORED = (
    "output_dir", "overwrite_output_dir", "logging_dir", "run_name", "report_to", "seed", "data_seed", "do_train",
    "do_eval", "do_predict", "per_device_eval_batch_size", "save_strategy", "save_total_limit",
    "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "logging_strategy", "use_cpu",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "remove_unused_columns", "dataloader_pin_memory",
    "disable_tqdm", "gradient_checkpointing_kwargs", "activation_checkpointing_kwargs", "optim", "max_grad_norm",
    "adam_beta1", "adam_beta2", "adam_epsilon", "label_names", "resume_from_checkpoint", "local_rank",
    "ddp_find_unused_parameters", "bias", "task_type", "modules_to_save", "inference_mode", "base_model_name_or_path",
)
AXOLOTL_KEYS = {
    "num_epochs": "num_train_epochs",
    "micro_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_ratio",
    "warmup_steps": "warmup_ratio",
    "lr_scheduler": "lr_scheduler_type",
    "bf16": "precision",
    "fp16": "precision",
    "gradient_checkpointing": "gradient_checkpointing",
    "evals_per_epoch": "eval_strategy",
    "eval_steps": "eval_steps",
    "save_steps": "save_steps",
    "logging_steps": "logging_steps",
    "early_stopping_patience": "early_stopping_patience",
    "dataloader_num_workers": "dataloader_num_workers",
    "adapter": None,  # must be lora: checked, sets nothing
    "lora_r": "lora.r",
    "lora_alpha": "lora.lora_alpha",
    "lora_dropout": "lora.lora_dropout",
    "lora_target_modules": "lora.target_modules",
    "lora_target_linear": "lora.target_modules",
    "peft_use_rslora": "lora.use_rslora",
    "peft_use_dora": "lora.use_dora",
}
AXOLOTL_IGNORED = (
    "base_model", "base_model_config", "model_type", "tokenizer_type", "tokenizer_config", "trust_remote_code",
    "datasets", "test_datasets", "dataset_prepared_path", "val_set_size", "chat_template", "output_dir", "seed",
    "sequence_len", "sample_packing", "eval_sample_packing", "pad_to_sequence_len", "train_on_inputs",
    "group_by_length", "special_tokens", "tokens", "load_in_8bit", "load_in_4bit", "strict", "optimizer",
    "max_grad_norm", "flash_attention", "xformers_attention", "sdp_attention", "tf32", "saves_per_epoch",
    "save_total_limit", "lora_model_dir", "lora_fan_in_fan_out", "wandb_project", "wandb_entity", "wandb_watch",
    "wandb_name", "wandb_log_model", "hub_model_id", "resume_from_checkpoint", "local_rank", "deepspeed", "fsdp",
    "fsdp_config", "debug", "logging_dir",
)
# LLaMA-Factory's keys, for 'lora-search export --format llama-factory' (not read)
LLAMA_FACTORY_KEYS = {
    "num_train_epochs": "num_train_epochs",
    "per_device_train_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_ratio",
    "lr_scheduler_type": "lr_scheduler_type",
    "eval_strategy": "eval_strategy",
    "eval_steps": "eval_steps",
    "save_steps": "save_steps",
    "logging_steps": "logging_steps",
    "dataloader_num_workers": "dataloader_num_workers",
    "lora_rank": "lora.r",
    "lora_alpha": "lora.lora_alpha",
    "lora_dropout": "lora.lora_dropout",
    "use_rslora": "lora.use_rslora",
    "use_dora": "lora.use_dora",
}
# The names architectures give their attention projections: a target_modules list of
# these only is what lora-search calls 'attention' (peft's per-architecture default).
ATTENTION_PROJECTIONS = frozenset({
    "q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "c_attn", "q_lin", "k_lin", "v_lin",
    "qkv_proj", "query_key_value", "Wqkv", "q", "k", "v", "o",
})
_TRAINING_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainingConfig))
_AXOLOTL_MARKERS = (set(AXOLOTL_KEYS) | set(AXOLOTL_IGNORED)) - set(HF_KEYS) - set(HF_IGNORED) - _TRAINING_FIELDS
_HF_SECTIONS = ("training_arguments", "lora_config", "early_stopping")
_HF_MARKERS = (set(HF_KEYS) | set(HF_IGNORED) | set(_HF_SECTIONS)) - _TRAINING_FIELDS


def foreign_form(data: dict[str, Any]) -> str | None:
    """'axolotl', 'hf' or 'llama-factory' for another trainer's config, None for lora-search's own layout."""
    if "finetuning_type" in data:  # LLaMA-Factory's own key
        return "llama-factory"
    if _AXOLOTL_MARKERS & set(data):
        return "axolotl"
    if _HF_MARKERS & set(data):
        return "hf"
    return None


def foreign_settings(data: dict[str, Any], form: str, *, source: str, from_yaml: bool) -> dict[str, Any]:
    """The TrainingConfig data (``TrainingConfig.from_dict``'s layout) another trainer's file sets."""
    if form == "llama-factory":
        raise SpaceError(f"{source}: a LLaMA-Factory config, which lora-search writes (export --format llama-factory) but "
                         "does not read back: check or train the study's lora-search preset, or its hf or axolotl export")
    if form == "hf":
        keys, ignored, label = HF_KEYS, HF_IGNORED, "Hugging Face TrainingArguments/LoraConfig"
        data = _hf_flattened(data, source)
    else:
        keys, ignored, label = AXOLOTL_KEYS, AXOLOTL_IGNORED, "axolotl"
        if data.get("lora_target_linear") is True:  # axolotl adds the listed modules to all linear layers
            data = {key: value for key, value in data.items() if key != "lora_target_modules"}
    unknown = sorted(set(data) - set(keys) - set(ignored))
    if unknown:
        import difflib

        named = []
        for key in unknown:
            near = difflib.get_close_matches(key, [*keys, *ignored], n=1, cutoff=0.75)
            named.append(f"{key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        raise SpaceError(
            f"{source}: unknown {label} keys {', '.join(named)}: "
            f"lora-search reads {', '.join(sorted(keys))} and ignores {', '.join(sorted(ignored))}"
        )
    settings: dict[str, Any] = {}
    given_by: dict[str, str] = {}
    for key, value in data.items():
        if key not in keys:
            continue
        target = keys[key]
        if from_yaml and number_as_text(value):
            value = float(value)  # the other trainers read YAML's '2e-5' as a number: so does this
        try:
            value = _CONVERSIONS.get(key, _unchanged)(key, value)
        except SpaceError as error:
            raise SpaceError(f"{source}: {error}") from None
        if target is None or value is None:
            continue
        if target in given_by and _setting(settings, target) != value:
            raise SpaceError(f"{source}: {given_by[target]} and {key} both set {target}, differently: keep one")
        given_by[target] = key
        section, _, name = target.rpartition(".")
        (settings.setdefault(section, {}) if section else settings)[name] = value
    return settings


def trainer_values(form: str, config: TrainingConfig) -> dict[str, Any]:
    """``config``'s settings under trainer ``form``'s keys ('axolotl', 'llama-factory'):
    those its table maps one to one; the others are the exporter's to write."""
    keys = {"axolotl": AXOLOTL_KEYS, "llama-factory": LLAMA_FACTORY_KEYS}[form]
    data = config.to_dict()
    return {key: _setting(data, target) for key, target in keys.items() if target and key not in _CONVERSIONS}


def _hf_flattened(data: dict[str, Any], source: str) -> dict[str, Any]:
    flat = {key: value for key, value in data.items() if key not in _HF_SECTIONS}
    for section in _HF_SECTIONS:
        values = data.get(section) or {}
        if not isinstance(values, dict):
            raise SpaceError(f"{source}: '{section}' must be a mapping of settings")
        twice = sorted(set(values) & set(flat))
        if twice:
            raise SpaceError(f"{source}: {', '.join(map(repr, twice))} given twice, in '{section}' and beside it: keep one")
        flat.update(values)
    return flat


def _setting(settings: dict[str, Any], target: str) -> Any:
    section, _, name = target.rpartition(".")
    return (settings.get(section, {}) if section else settings).get(name)


def _unchanged(key: str, value: Any) -> Any:
    return value


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpaceError(f"{key}: must be true or false, got {value!r}")
    return value


def _precision(key: str, value: Any) -> str | None:
    return key if _boolean(key, value) else None


def _warmup(key: str, value: Any) -> float:
    if value == 0 or (isinstance(value, float) and 0 < value < 1):
        return float(value)
    raise SpaceError(f"{key}: {value!r} is a number of steps; lora-search sets warmup as a share of the steps: write warmup_ratio")


def _target_modules(key: str, value: Any) -> str:
    if value is None:
        return "attention"
    if value in TARGET_MODULE_PRESETS:
        return value
    if isinstance(value, list) and value and set(value) <= ATTENTION_PROJECTIONS:
        return "attention"
    raise SpaceError(
        f"{key}: lora-search targets the attention projections (peft's default for the architecture) "
        f"or every linear layer ('all-linear'), got {value!r}: write 'all-linear' or attention projections only"
    )


def _target_linear(key: str, value: Any) -> str | None:
    return "all-linear" if _boolean(key, value) else None


def _evals_per_epoch(key: str, value: Any) -> str:
    if value == 1:
        return "epoch"
    raise SpaceError(f"{key}: {value!r} evaluations per epoch need the steps per epoch: write eval_steps, or evals_per_epoch: 1")


def _adapter(key: str, value: Any) -> None:
    if value != "lora":
        raise SpaceError(f"{key}: lora-search trains 'lora' adapters, got {value!r}")


_CONVERSIONS: dict[str, Callable[[str, Any], Any]] = {
    "bf16": _precision,
    "fp16": _precision,
    "warmup_steps": _warmup,
    "target_modules": _target_modules,
    "lora_target_modules": _target_modules,
    "lora_target_linear": _target_linear,
    "evals_per_epoch": _evals_per_epoch,
    "adapter": _adapter,
}
