import pytest

from lora_search.objectives._hardware import detect_hardware, nominal_gb
from lora_search.spaces import RunProfile


def test_detected_hardware_makes_a_profile():
    hardware = detect_hardware()
    assert set(hardware) == {"accelerator", "devices", "gpu_memory_gb", "bf16_supported"}
    profile = RunProfile(dataset_size=100, **hardware)
    if profile.accelerator == "cpu":
        assert hardware == {"accelerator": "cpu", "devices": 1, "gpu_memory_gb": None, "bf16_supported": False}
    else:
        assert profile.gpu_memory_gb >= 1


@pytest.mark.parametrize(
    ("total_bytes", "gb"),
    # what torch reports for cards sold as 4, 8, 16, 24, 40 and 80 GB
    [(4_236_378_112, 4.0), (8_361_738_240, 8.0), (17_071_734_784, 16.0), (25_769_803_776, 24.0),
     (42_298_834_944, 40.0), (85_045_414_912, 80.0)],
)
def test_nominal_size(total_bytes, gb):
    assert nominal_gb(total_bytes) == gb
