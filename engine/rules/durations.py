"""Durations ("30m", "7d") and times of day ("09:30") as marketers write them."""

from __future__ import annotations

import re

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*$"
TIME_OF_DAY_PATTERN = r"^([01]?\d|2[0-3]):[0-5]\d$"
DURATION_HELP = "a number and a unit: 90s, 30m, 2h, 7d or 2w"

_DURATION = re.compile(DURATION_PATTERN)
_TIME = re.compile(TIME_OF_DAY_PATTERN)


def parse_duration(text: str) -> float:
    """Seconds in a duration string; ValueError with the accepted forms otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"bad duration {text!r}: use {DURATION_HELP}")
    number = text.strip()[: -len(match.group(2))].strip()
    return float(number) * UNITS[match.group(2)]


def parse_time_of_day(text: str) -> int:
    """Minutes after midnight in an "HH:MM" string."""
    if _TIME.match(text) is None:
        raise ValueError(f"bad time of day {text!r}: use HH:MM on a 24-hour clock, e.g. 09:30")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def format_duration(seconds: float) -> str:
    """The shortest exact form, for messages: 1800 -> "30m"."""
    for unit in ("w", "d", "h", "m", "s"):
        size = UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
