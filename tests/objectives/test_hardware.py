import pytest

from lora_search.objectives._hardware import Launch, data_parallel_width, detect_hardware, distributed_launch, nominal_gb
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


@pytest.mark.parametrize(
    ("environment", "launch"),
    [({}, None),
     ({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}, None),  # torchrun --nproc-per-node 1: alone
     ({"WORLD_SIZE": "4", "RANK": "5", "LOCAL_RANK": "1"}, Launch(rank=5, local_rank=1, world_size=4)),
     ({"WORLD_SIZE": "two"}, None)],  # no launcher writes that
)
def test_a_distributed_launch_is_read_from_the_launchers_variables(environment, launch, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert distributed_launch() == launch
    # a launch's processes each train one replica, a quantized one too; the CPU alone is one device
    assert data_parallel_width("cpu", "4bit") == (1 if launch is None else launch.world_size)
