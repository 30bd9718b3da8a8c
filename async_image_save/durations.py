"""Parsing of short durations such as ``15m`` for command-line options."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"7d"`` -> timedelta; ValueError naming the format."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration; use a number and s, m, h or d, e.g. 15m.")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
