"""Reading memory sizes and durations as people write them on the command line."""

from __future__ import annotations

import math
import re

from ._errors import SpaceError

# Unit -> gigabytes. GPU vendors and nvidia-smi mean binary units when they say "GB",
# so GB and GiB are the same here (an "8GB" card reports about 8 GiB).
_MEMORY_UNITS = {"": 1.0, "g": 1.0, "gb": 1.0, "gib": 1.0, "m": 1 / 1024, "mb": 1 / 1024, "mib": 1 / 1024, "t": 1024.0, "tb": 1024.0, "tib": 1024.0}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)

_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])", re.IGNORECASE)


def parse_memory(text: str | float | int) -> float:
    """Gigabytes from '8GB', '8 GiB', '512MB', '1.5TB' or a bare number of GB ('8')."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _MEMORY.match(str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _MEMORY_UNITS:
            raise SpaceError(f"memory size {text!r} not understood: write e.g. '8GB', '24 GiB', '512MB' or '8' (GB)")
        value = float(match.group(1)) * _MEMORY_UNITS[unit]
    if not (value > 0 and math.isfinite(value)):
        raise SpaceError(f"memory size {text!r} must be more than zero")
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
    if not (seconds > 0 and math.isfinite(seconds)):
        raise SpaceError(f"duration {text!r} must be more than zero")
    return seconds


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
