"""Reading memory sizes and durations as people write them on the command line."""

from __future__ import annotations

import math
import re

from ._errors import SpaceError

# Unit -> gigabytes. A card is sold by its GB, and nvidia-smi shows that size in binary
# units (an 8 GB card: 8192 MiB), so GB and GiB are the same here, one row of the guide's
# table. The other prefixes keep their own base: 1000 MB or 1024 MiB make a GB, so
# '8000MB' and '8192MiB' are both the 8 GB row.
_MEMORY_UNITS = {
    "": 1.0, "g": 1.0, "gb": 1.0, "gib": 1.0,
    "m": 1e-3, "mb": 1e-3, "mib": 1 / 1024, "t": 1e3, "tb": 1e3, "tib": 1024.0,
}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)

# Model sizes as people name them: '7B', '110M', '1.5B' (decimal, as model cards count).
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
# A bare count under a million is a size written without its unit ('7' for 7B): no
# pretrained transformer worth a LoRA search is that small.
BARE_COUNT_FLOOR = 10**6
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)

_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])", re.IGNORECASE)


def parse_memory(text: str | float | int) -> float:
    """Gigabytes from '8GB', '8 GiB', '8000MB', '8192MiB', '1.5TB' or a bare number of GB ('8')."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _MEMORY.match(str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _MEMORY_UNITS:
            raise SpaceError(f"memory size {text!r} not understood: write e.g. '8GB', '24 GiB', '8000MB' or '8' (GB)")
        value = float(match.group(1)) * _MEMORY_UNITS[unit]
    _positive_and_finite(value, f"memory size {text!r}")
    return value


def parse_duration(text: str | float | int) -> float:
    """Seconds from '30m', '2h', '90s', '1h30m', '1d' or a bare number of seconds ('45')."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        compact = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", compact):
            seconds = float(compact)
        elif compact and re.fullmatch(r"(?:\d+(?:\.\d+)?[dhms])+", compact):
            units = [unit for _, unit in _DURATION_PART.findall(compact)]
            if len(set(units)) != len(units):
                raise SpaceError(f"duration {text!r} repeats a unit: write e.g. '1h30m'")
            seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(compact))
        else:
            raise SpaceError(f"duration {text!r} not understood: write e.g. '30m', '2h', '1h30m', '90s' or '45' (seconds)")
    _positive_and_finite(seconds, f"duration {text!r}")
    return seconds


def parse_count(text: str | int) -> int:
    """A number of model parameters from '7B', '110M', '1.5B', '13e9' or a bare integer."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _COUNT.match(str(text))
        if match is None:
            raise SpaceError(f"model size {text!r} not understood: write e.g. '7B', '110M' or '13000000000' (parameters)")
        value = float(match.group(1)) * _COUNT_UNITS[match.group(2).lower()]
        if not match.group(2) and 0 < value < BARE_COUNT_FLOOR:
            raise SpaceError(f"model size {text!r} would be {text.strip()} parameters: give the unit, e.g. "
                             f"'{text.strip()}B' or '{text.strip()}M'")
    _positive_and_finite(value, f"model size {text!r}")
    return round(value)


def format_count(count: int) -> str:
    """'7B', '110M', '1.5B': the way ``parse_count`` reads them."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= scale:
            return f"{count / scale:g}{suffix}"
    return str(count)


def _positive_and_finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise SpaceError(f"{what} must be finite")
    if not value > 0:
        raise SpaceError(f"{what} must be more than zero")


_NUMBER_AS_TEXT = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")


def number_as_text(value: object) -> str | None:
    """For text that YAML left unparsed but that reads as a number, the problem and fix.

    PyYAML follows YAML 1.1, where '1e-5' (no dot) is text; '1.0e-5' is a number.
    """
    if not isinstance(value, str) or not _NUMBER_AS_TEXT.match(value):
        return None
    mantissa, _, exponent = value.strip().lower().partition("e")
    fixed = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}" if exponent else value.strip()
    return f"{value!r} was read as text, not a number (YAML needs a dot before the exponent): write {fixed}"
