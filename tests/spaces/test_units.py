import math

import pytest

from lora_search.spaces import SpaceError, parse_count, parse_duration, parse_memory
from lora_search.spaces._units import format_count


@pytest.mark.parametrize(
    ("text", "gb"),
    [
        ("8GB", 8.0), ("8 GiB", 8.0), ("8gb", 8.0), ("8", 8.0), ("512MiB", 0.5), ("500MB", 0.5), ("1.5 TB", 1500.0),
        ("1.5TiB", 1536.0), (24, 24.0), ("0.5G", 0.5),
        # the 8 GB row however it is written: decimal MB, or the MiB nvidia-smi shows
        ("8000MB", 8.0), ("8000 M", 8.0), ("8192MiB", 8.0), ("16000MB", 16.0), ("24576MiB", 24.0),
    ],
)
def test_parse_memory(text, gb):
    assert parse_memory(text) == pytest.approx(gb)


@pytest.mark.parametrize("text", ["", "eight", "8 XB", "-8GB", "0GB", "8GB8", "inf", "infGB"])
def test_parse_memory_rejects(text):
    with pytest.raises(SpaceError, match="memory size"):
        parse_memory(text)


@pytest.mark.parametrize("value", [math.inf, math.nan, -math.inf])
def test_non_finite_numbers_are_rejected_as_such(value):
    with pytest.raises(SpaceError, match="must be finite"):
        parse_memory(value)
    with pytest.raises(SpaceError, match="must be finite"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "count"),
    [("7B", 7 * 10**9), ("110M", 110 * 10**6), ("1.5b", 1_500_000_000), ("13e9", 13 * 10**9), ("350 m", 350 * 10**6),
     ("66000000", 66_000_000), (125_000_000, 125_000_000), ("4.4M", 4_400_000), ("2k", 2000)],
)
def test_parse_count(text, count):
    assert parse_count(text) == count


@pytest.mark.parametrize(("text", "message"), [("seven", "not understood"), ("7 GB", "not understood"), ("0", "more than zero"),
                                               ("1e999", "finite"), ("-7B", "not understood"),
                                               ("7", r"would be 7 parameters: give the unit, e\.g\. '7B' or '7M'"),
                                               ("999999", "give the unit")])
def test_parse_count_rejects(text, message):
    with pytest.raises(SpaceError, match=f"model size .*{message}"):
        parse_count(text)


@pytest.mark.parametrize(("count", "text"), [(7 * 10**9, "7B"), (110 * 10**6, "110M"), (1_500_000_000, "1.5B"), (2000, "2K")])
def test_format_count_reads_back(count, text):
    assert format_count(count) == text and parse_count(text) == count


def test_format_count_leaves_a_count_under_a_thousand_bare():
    assert format_count(999) == "999"  # only a test model is that small; read back, it would want a unit


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
