"""What every input format shares: the one error a parser raises, and the checks on names, values and tags."""

from __future__ import annotations

import math
import re

#: Limits that keep one line from costing unbounded memory downstream.
MAX_NAME_CHARS = 1024
MAX_TAG_CHARS = 1024
MAX_TAGS = 64
MAX_NUMBER_CHARS = 64
#: A JSON document that opens more arrays or objects than this before anything else is too deep
#: (a metric needs two: an array of objects): refused before the json module reads it at all.
MAX_JSON_DEPTH = 64
#: The largest magnitude a value (or a counter's value over its rate, or one sample's weight) may
#: have: far below the largest float, so that the sums of an interval stay finite.
MAX_MAGNITUDE = 1e300

_NAME_FIXES = re.compile(r"[\s/]")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class ParseError(Exception):
    """A line or metric that cannot be accepted; ``reason`` is its counter label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def metric_name(raw: str) -> str:
    """A name as statsd daemons normalise it: whitespace → ``_``, ``/`` → ``-``; never empty."""
    name = raw.strip()
    if _NAME_FIXES.search(name):
        name = re.sub(r"\s+", "_", name).replace("/", "-")
    if not name:
        raise ParseError("empty_name")
    if len(name) > MAX_NAME_CHARS:
        raise ParseError("name_too_long")
    return name


def number(text: str) -> float:
    """A finite decimal number within MAX_MAGNITUDE, stricter than ``float()``: no ``_``, padding, hex or
    non-ASCII digits."""
    try:
        value = float(text)
    except (ValueError, OverflowError):
        raise ParseError("bad_value") from None
    if not math.isfinite(value):
        raise ParseError("non_finite")
    if (len(text) > MAX_NUMBER_CHARS or "_" in text or not text.isascii()
            or text[0] <= " " or text[-1] <= " "):
        raise ParseError("bad_value")
    return check_magnitude(value)


def check_magnitude(value: float) -> float:
    if abs(value) > MAX_MAGNITUDE:
        raise ParseError("out_of_range")
    return value


def sample_rate(value: float) -> float:
    """A rate in (0, 1] whose inverse (what one sample counts for) is at most MAX_MAGNITUDE."""
    if not 0.0 < value <= 1.0 or 1.0 / value > MAX_MAGNITUDE:
        raise ParseError("bad_sample_rate")
    return value


def check_counted(value: float, rate: float) -> None:
    """What a counter adds, its value over its rate, must be within MAX_MAGNITUDE too."""
    check_magnitude(value / rate)


def check_tag(key: str, value: str, tags: dict[str, str]) -> None:
    """Add one tag to ``tags`` after the checks every format shares."""
    if not key:
        raise ParseError("bad_tag")
    if len(key) > MAX_TAG_CHARS or len(value) > MAX_TAG_CHARS:
        raise ParseError("tag_too_long")
    tags[key] = value
    if len(tags) > MAX_TAGS:
        raise ParseError("too_many_tags")
