"""What the guide's rules need to know about a run: data size, hardware and model size."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._errors import SpaceError
from ._rules import QUANTIZATIONS, base_fit_note, precision_for, quantization_for
from ._units import format_count

ACCELERATORS = ("cpu", "cuda")


@dataclass(frozen=True)
class RunProfile:
    """The facts a space is resolved for. Validates on construction."""

    dataset_size: int = field(metadata={"help": "Training examples in the FULL training split (not the trial's sample)."})
    accelerator: str = field(default="cpu", metadata={"help": "'cpu' or 'cuda'."})
    devices: int = field(default=1, metadata={"help": "Devices training together (data parallel); 1 on CPU."})
    gpu_memory_gb: float | None = field(default=None, metadata={"help": "Memory of ONE GPU in GB; required for cuda, None on CPU."})
    bf16_supported: bool = field(default=False, metadata={"help": "Whether the GPUs compute in bfloat16 (Ampere and newer)."})
    model_parameters: int | None = field(
        default=None,
        metadata={"help": "Parameters of the base model (all of them, not the adapter's); None: unknown, the learning rate is not narrowed."},
    )
    quantization: str | None = field(
        default=None, metadata={"help": "'4bit' or '8bit': the base loaded quantized by bitsandbytes; None: 16-bit on a GPU, fp32 on CPU."}
    )

    def __post_init__(self) -> None:
        if not (isinstance(self.dataset_size, int) and not isinstance(self.dataset_size, bool) and self.dataset_size >= 1):
            raise SpaceError(f"dataset_size must be a positive number of training examples, got {self.dataset_size!r}")
        if self.accelerator not in ACCELERATORS:
            raise SpaceError(f"accelerator must be one of {', '.join(ACCELERATORS)}, got {self.accelerator!r}")
        if not (isinstance(self.devices, int) and not isinstance(self.devices, bool) and self.devices >= 1):
            raise SpaceError(f"devices must be a positive integer, got {self.devices!r}")
        parameters = self.model_parameters
        if parameters is not None and not (isinstance(parameters, int) and not isinstance(parameters, bool) and parameters >= 1):
            raise SpaceError(f"model_parameters must be a positive number of parameters or None, got {parameters!r}")
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise SpaceError(f"quantization must be one of {', '.join(QUANTIZATIONS)} or None, got {self.quantization!r}")
        if not isinstance(self.bf16_supported, bool):
            raise SpaceError(f"bf16_supported must be true or false, got {self.bf16_supported!r}")
        if self.accelerator == "cpu":
            if self.gpu_memory_gb is not None:
                raise SpaceError("gpu_memory_gb was given for a CPU run: give accelerator 'cuda' or drop the GPU memory")
            if self.devices != 1:
                raise SpaceError(f"a CPU run trains on one device, got devices={self.devices}")
            if self.bf16_supported:
                raise SpaceError("bf16_supported applies to GPUs; the guide trains in fp32 on CPU")
        else:
            memory = self.gpu_memory_gb
            if not (isinstance(memory, (int, float)) and not isinstance(memory, bool) and 0 < memory < math.inf):
                raise SpaceError(f"a cuda run needs gpu_memory_gb (memory of one GPU in GB), got {memory!r}")

    def describe(self) -> str:
        """One line, e.g. '4,000 training examples, 2 x cuda 24 GB (bf16), 7B-parameter model in 4-bit'."""
        if self.accelerator == "cpu":
            hardware = "cpu"
        else:
            count = f"{self.devices} x " if self.devices > 1 else ""
            hardware = f"{count}cuda {self.gpu_memory_gb:g} GB ({'bf16' if self.bf16_supported else 'no bf16'})"
        model = f", {format_count(self.model_parameters)}-parameter model" if self.model_parameters else ""
        quantized = f", base in {self.quantization[0]}-bit" if self.quantization else ""
        return f"{self.dataset_size:,} training examples, {hardware}{model}{quantized}"

    def base_fit(self) -> str | None:
        """How the base fits one GPU and in what it loads, by the 4-bit rule where no
        quantization is given; None on CPU or with the model's size unknown."""
        parameters, memory = self.model_parameters, self.gpu_memory_gb
        if parameters is None or memory is None:
            return None
        if self.quantization is not None:
            return f"{base_fit_note(parameters, self.quantization, memory)}: loaded in {self.quantization} as asked"
        half = precision_for(self.accelerator, self.bf16_supported)
        rule = "(rule: 4-bit where the 16-bit weights + 20% of the GPU to train exceed it)"
        if quantization_for(parameters, memory) is None:
            return f"{base_fit_note(parameters, half, memory)}: loaded in {half} {rule}"
        return f"{base_fit_note(parameters, half, memory)}: loaded in 4-bit, QLoRA ({base_fit_note(parameters, '4bit', memory)}) {rule}"
