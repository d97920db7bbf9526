"""What every input format shares: the one error a parser raises, and the checks on names, values and tags."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from stages.common.intervals import interval_index

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
#: The most digits a DogStatsD ``|T`` timestamp may have (unix seconds: ten until the year 2286).
MAX_STAMP_DIGITS = 18

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


class OpenInterval:
    """The flush interval the receiver's batch window is filling: its batches carry a moment of it, and
    a shard files them in that interval. A metric stamped with a moment of its own (DogStatsD ``|T``,
    JSON ``timestamp``) is taken only when that moment is in this interval, so it lands exactly where
    it was stamped; stamped in an earlier interval it is ``too_old``, in a later one ``in_future``
    (counted, never filed in another interval). The receiver moves it on as its window moves on
    (:meth:`open_at`), before each payload is parsed."""

    __slots__ = ("interval", "index")

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self.index = interval_index(now, interval)

    def open_at(self, ts: float) -> None:
        """The window now fills the interval of ``ts`` (the moment its batches will carry)."""
        self.index = interval_index(ts, self.interval)

    def check(self, stamp: float) -> None:
        index = interval_index(stamp, self.interval)
        if index < self.index:
            raise ParseError("too_old")
        if index > self.index:
            raise ParseError("in_future")


@dataclass(frozen=True)
class LineOptions:
    """What a receiver's config changes in how lines are read (none: as a parser alone reads them)."""

    #: None: stamps are read and checked for form only (a parser outside a receiver has no interval).
    open_interval: OpenInterval | None = None
    #: DogStatsD's ``|c:<container id>`` becomes the tag ``container_id:<id>`` (else it is ignored).
    keep_container_id: bool = False
    #: Where events and service checks go, as records (:mod:`.dogstatsd_records`); None: they are
    #: dropped and counted as unsupported (nobody takes them on).
    records: list[dict[str, Any]] | None = None


#: How a parser reads lines when nobody says otherwise.
PLAIN = LineOptions()


#: The tag a kept DogStatsD ``|c:`` container id becomes (DogStatsD's own name for it).
CONTAINER_ID_TAG = "container_id"


def dogstatsd_tags(text: str, tags: dict[str, str]) -> None:
    """A DogStatsD ``#k:v,k2,...`` field's tags (without its ``#``) into ``tags``; a bare key has an empty value."""
    for item in text.split(","):
        if item:
            key, _, value = item.partition(":")
            check_tag(key, value, tags)


def container_id(field: str, tags: dict[str, str]) -> None:
    """A ``c:<id>`` field as the tag :data:`CONTAINER_ID_TAG` (an empty id adds none): when the
    config keeps container ids."""
    if len(field) > 2:
        check_tag(CONTAINER_ID_TAG, field[2:], tags)


def dogstatsd_stamp(text: str) -> int:
    """The unix seconds of a ``|T`` field's text: plain ASCII digits, as DogStatsD clients write them."""
    if not text or len(text) > MAX_STAMP_DIGITS or not text.isascii() or not text.isdigit():
        raise ParseError("bad_timestamp")
    return int(text)
