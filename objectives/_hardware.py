"""What this machine trains on, in the terms of ``RunProfile`` (minus the dataset size)."""

from __future__ import annotations

from typing import Any

_GIB = 1024**3


def detect_hardware() -> dict[str, Any]:
    """accelerator, devices, gpu_memory_gb (of the smallest visible GPU), bf16_supported.

    torch is imported here, not at module level, so commands that never train stay fast.
    Visible GPUs follow CUDA_VISIBLE_DEVICES. With several GPUs the smallest one's memory
    is used: data-parallel training must fit the same batch on each.
    """
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return {"accelerator": "cpu", "devices": 1, "gpu_memory_gb": None, "bf16_supported": False}
    devices = torch.cuda.device_count()
    memory = min(torch.cuda.get_device_properties(index).total_memory for index in range(devices))
    return {
        "accelerator": "cuda",
        "devices": devices,
        "gpu_memory_gb": round(memory / _GIB, 1),
        "bf16_supported": bool(torch.cuda.is_bf16_supported()),
    }
