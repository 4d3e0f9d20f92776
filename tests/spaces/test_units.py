import pytest

from lora_search.spaces import SpaceError, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("text", "gb"),
    [("8GB", 8.0), ("8 GiB", 8.0), ("8gb", 8.0), ("8", 8.0), ("512MB", 0.5), ("1.5 TB", 1536.0), (24, 24.0), ("0.5G", 0.5)],
)
def test_parse_memory(text, gb):
    assert parse_memory(text) == pytest.approx(gb)


@pytest.mark.parametrize("text", ["", "eight", "8 XB", "-8GB", "0GB", "8GB8"])
def test_parse_memory_rejects(text):
    with pytest.raises(SpaceError, match="memory size"):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("90s", 90), ("1h30m", 5400), ("45", 45), ("1d", 86400), ("1.5h", 5400), (60, 60)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30x", "1h1h", "0m", "h30"])
def test_parse_duration_rejects(text):
    with pytest.raises(SpaceError, match="duration"):
        parse_duration(text)
