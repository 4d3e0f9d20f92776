import pytest

from lora_search.spaces import RunProfile, SpaceError


def test_cpu_profile_defaults():
    profile = RunProfile(4000)
    assert (profile.accelerator, profile.devices, profile.gpu_memory_gb, profile.bf16_supported) == ("cpu", 1, None, False)
    assert profile.describe() == "4,000 training examples, cpu"


def test_gpu_profile_describes_itself():
    assert RunProfile(500, "cuda", 2, 24.0, True).describe() == "500 training examples, 2 x cuda 24 GB (bf16)"


def test_model_size_is_optional_and_described():
    assert RunProfile(4000).model_parameters is None
    assert RunProfile(4000, model_parameters=7_000_000_000).describe() == "4,000 training examples, cpu, 7B-parameter model"
    # a profile stored before the field existed still loads
    stored = {"dataset_size": 4000, "accelerator": "cuda", "devices": 1, "gpu_memory_gb": 8.0, "bf16_supported": False}
    assert RunProfile(**stored).model_parameters is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset_size": 0}, "dataset_size"),
        ({"dataset_size": 10.5}, "dataset_size"),
        ({"dataset_size": 10, "accelerator": "tpu"}, "accelerator"),
        ({"dataset_size": 10, "devices": 0}, "devices"),
        ({"dataset_size": 10, "gpu_memory_gb": 8.0}, "CPU run"),
        ({"dataset_size": 10, "devices": 2}, "one device"),
        ({"dataset_size": 10, "bf16_supported": True}, "GPUs"),
        ({"dataset_size": 10, "accelerator": "cuda"}, "gpu_memory_gb"),
        ({"dataset_size": 10, "accelerator": "cuda", "gpu_memory_gb": -1.0}, "gpu_memory_gb"),
        ({"dataset_size": 10, "accelerator": "cuda", "gpu_memory_gb": float("inf")}, "gpu_memory_gb"),
        ({"dataset_size": 10, "model_parameters": 0}, "model_parameters"),
        ({"dataset_size": 10, "model_parameters": 7e9}, "model_parameters"),
        ({"dataset_size": 10, "quantization": "nf4"}, "quantization must be one of 4bit, 8bit"),
    ],
)
def test_invalid_profiles(kwargs, message):
    with pytest.raises(SpaceError, match=message):
        RunProfile(**kwargs)


def test_quantization_is_optional_and_described():
    assert RunProfile(4000).quantization is None
    assert RunProfile(4000, quantization="4bit").describe() == "4,000 training examples, cpu, base in 4-bit"


def test_base_fit_on_a_gpu_with_the_model_size_known():
    assert RunProfile(4000).base_fit() is None and RunProfile(4000, "cuda", 1, 8.0, model_parameters=7_000_000_000).base_fit() is not None
    assert RunProfile(4000, "cuda", 1, 8.0).base_fit() is None
    small = RunProfile(4000, "cuda", 1, 8.0, model_parameters=7_000_000_000).base_fit()
    assert small.startswith("13.0 GB in fp16 + 1.6 GB to train exceed 8 GB: loaded in 4-bit, QLoRA (3.4 GB and up in 4bit")
    assert "loaded in bf16 (rule:" in RunProfile(4000, "cuda", 1, 24.0, True, model_parameters=7_000_000_000).base_fit()
    asked = RunProfile(4000, "cuda", 1, 24.0, True, model_parameters=7_000_000_000, quantization="8bit").base_fit()
    assert asked == "6.5 GB and up in 8bit + 4.8 GB to train fit 24 GB: loaded in 8bit as asked"
