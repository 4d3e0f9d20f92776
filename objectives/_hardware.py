"""What this machine trains on, in the terms of ``RunProfile`` (minus the dataset size)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

_GIB = 1024**3


@dataclass(frozen=True)
class Launch:
    """This process's place among the processes a distributed launcher started."""

    rank: int  # 0 writes what the training leaves behind and prints its progress
    local_rank: int  # the GPU of this host this process trains on
    world_size: int  # processes training together, one device each


def distributed_launch() -> Launch | None:
    """Where ``torchrun`` or ``accelerate launch`` started this process among others (they set
    WORLD_SIZE, RANK and LOCAL_RANK to whole numbers), or None when it runs alone."""
    world_size, rank, local_rank = (os.environ.get(name, "") for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    if not world_size.isdigit() or int(world_size) <= 1:
        return None
    return Launch(int(rank) if rank.isdigit() else 0, int(local_rank) if local_rank.isdigit() else 0, int(world_size))


def detect_hardware() -> dict[str, Any]:
    """accelerator, devices, gpu_memory_gb (of the smallest visible GPU), bf16_supported.

    torch is imported here, not at module level, so commands that never train stay fast.
    Visible GPUs follow CUDA_VISIBLE_DEVICES. With several GPUs the smallest one's memory
    is used: data-parallel training must fit the same batch on each. Under a distributed
    launch the devices are its processes, one GPU each (on all of its hosts).
    """
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return {"accelerator": "cpu", "devices": 1, "gpu_memory_gb": None, "bf16_supported": False}
    visible = torch.cuda.device_count()
    memory = min(torch.cuda.get_device_properties(index).total_memory for index in range(visible))
    launch = distributed_launch()
    return {
        "accelerator": "cuda",
        "devices": visible if launch is None else launch.world_size,
        "gpu_memory_gb": nominal_gb(memory),
        "bf16_supported": cuda_bf16_native(),
    }


def data_parallel_width(device: str, quantization: str | None) -> int:
    """The devices one training spreads each batch over. Under a distributed launch, its
    processes: the Trainer wraps each one's model in DistributedDataParallel. Alone, the
    Trainer wraps the model in ``nn.DataParallel`` across every visible GPU, except a
    quantized one (it cannot be replicated). A ``--workers`` process sees one GPU; the CPU
    counts as one."""
    launch = distributed_launch()
    if launch is not None:
        return launch.world_size
    if device != "cuda" or quantization is not None:
        return 1
    import torch

    return max(1, torch.cuda.device_count())


def cuda_bf16_native() -> bool:
    """Whether the current GPU computes in bf16 natively: compute capability 8.0 and up
    (A100, H100, RTX 30 and 40), or ROCm. On older GPUs (T4, V100: no bf16 units, fp16
    ones) ``torch.cuda.is_bf16_supported()`` says yes where bf16 can merely be emulated,
    and finds that out by allocating a tensor there, which gives a process that trains
    nothing on the GPU (the parent of ``--workers``) a CUDA context."""
    import torch

    return bool(torch.version.hip) or torch.cuda.get_device_capability()[0] >= 8


def training_profile(dataset_size: int, model_parameters: int, quantization: str | None) -> Any:
    """The ``RunProfile`` of a training on this machine: what ``run`` resolves a space for
    and ``train --fit-to-data`` fits a preset to, so an exported winner and a fitted preset
    trained on the same data see the same one."""
    from lora_search.spaces import RunProfile

    return RunProfile(dataset_size=dataset_size, model_parameters=model_parameters, quantization=quantization, **detect_hardware())


def nominal_gb(total_bytes: int) -> float:
    """The size a card is sold as: torch reports a little less than it (an 8 GB RTX 3070
    shows 7.79 GiB, a 40 GB A100 39.4), which would put it under the guide's 8 GB row."""
    return float(math.ceil(total_bytes / _GIB - 0.01))
