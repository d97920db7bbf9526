"""The domain shared by every stage: metric types, the sample tuple and series keys.

A parsed sample is a plain tuple ``(name, type, value, rate, tags)``; ``tags`` is a flat tuple
``(k1, v1, k2, v2, ...)`` sorted by key. Batches and shards name a series by one string, its
:func:`series_key`: the name and the flat tags joined by :data:`KEY_SEPARATOR`, a control character
that no parser lets into a name or tag, so the key splits back exactly.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

SampleValue = float | str
Tags = tuple[str, ...]
Sample = tuple[str, int, SampleValue, float, Tags]


class MetricType(IntEnum):
    """Metric kinds on the wire. Append-only: a number is never reused or renumbered."""

    COUNTER = 1
    GAUGE = 2
    GAUGE_DELTA = 3
    TIMER = 4
    HISTOGRAM = 5
    DISTRIBUTION = 6
    SET = 7
    TRACE = 8


#: The ``type`` field of an aggregate for each wire type (a gauge delta aggregates as a gauge).
OUTPUT_TYPE_NAMES: dict[int, str] = {
    MetricType.COUNTER: "counter",
    MetricType.GAUGE: "gauge",
    MetricType.GAUGE_DELTA: "gauge",
    MetricType.TIMER: "timer",
    MetricType.HISTOGRAM: "histogram",
    MetricType.DISTRIBUTION: "distribution",
    MetricType.SET: "set",
    MetricType.TRACE: "trace",
}

#: Types whose aggregate carries ``stats`` instead of ``value``.
SAMPLED_TYPES = frozenset({MetricType.TIMER, MetricType.HISTOGRAM, MetricType.DISTRIBUTION})


#: Between the name and each tag key and value in a series key (the compiled window writes it too).
KEY_SEPARATOR = "\x1f"


def series_key(name: str, tags: Tags) -> str:
    """One string for a series: ``name`` alone, or ``name\x1fk1\x1fv1...``."""
    return KEY_SEPARATOR.join((name, *tags)) if tags else name


def split_series_key(key: str) -> tuple[str, Tags]:
    """The name and flat tags of a :func:`series_key`."""
    name, *tags = key.split(KEY_SEPARATOR)
    return name, tuple(tags)


def series_name(key: str) -> str:
    """The name of a :func:`series_key` (what picks its shard and counts against its series limit)."""
    return key.partition(KEY_SEPARATOR)[0]


def tag_tuple(tags: dict[str, str], defaults: dict[str, str]) -> Tags:
    """Flatten ``tags`` plus every default tag the metric does not set itself, sorted by key."""
    if defaults:
        merged = dict(defaults)
        merged.update(tags)
        tags = merged
    if not tags:
        return ()
    flat: list[str] = []
    for key in sorted(tags):
        flat.append(key)
        flat.append(tags[key])
    return tuple(flat)


def tags_dict(tags: Tags) -> dict[str, str]:
    """The mapping form of a flat tag tuple, as aggregates carry it."""
    return dict(zip(tags[0::2], tags[1::2], strict=True))


def aggregate(name: str, mtype: int, tags: Tags, timestamp: float, interval: float,
              **fields: Any) -> dict[str, Any]:
    """One aggregate in the output contract's key order."""
    return IntervalAggregates(timestamp, interval).make(name, mtype, tags, fields)


class IntervalAggregates:
    """Builds the many aggregates of one interval: the times and each tag set are converted once.

    Aggregates with the same tags share one tags mapping: they are only ever encoded, never changed.
    """

    __slots__ = ("timestamp", "interval", "_tags", "_tag_texts")

    def __init__(self, timestamp: float, interval: float) -> None:
        self.timestamp = whole(timestamp)
        self.interval = whole(interval)
        self._tags: dict[Tags, dict[str, str]] = {}
        #: the tags part of a series key → its mapping
        self._tag_texts: dict[str, dict[str, str]] = {}

    def make(self, name: str, mtype: int, tags: Tags, fields: dict[str, Any]) -> dict[str, Any]:
        """One aggregate in the output contract's key order; ``fields`` follow the common keys."""
        mapping = self._tags.get(tags)
        if mapping is None:
            mapping = self._tags[tags] = tags_dict(tags)
        return self._aggregate(name, OUTPUT_TYPE_NAMES[mtype], mapping, fields)

    def make_keyed(self, key: str, type_name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """:meth:`make` for the series :func:`series_key` names, of the output type ``type_name``.

        The flush's hot loop: the key is cut once, and its tags are looked up by their text.
        """
        name, _, tag_text = key.partition(KEY_SEPARATOR)
        mapping = self._tag_texts.get(tag_text)
        if mapping is None:
            mapping = self._tag_texts[tag_text] = tags_dict(tuple(tag_text.split(KEY_SEPARATOR)) if tag_text else ())
        return self._aggregate(name, type_name, mapping, fields)

    def _aggregate(self, name: str, type_name: str, tags: dict[str, str], fields: dict[str, Any]) -> dict[str, Any]:
        """The output contract's key order: the common keys, then ``fields``."""
        return {"name": name, "type": type_name, "tags": tags, "timestamp": self.timestamp,
                "interval": self.interval, **fields}


def whole(seconds: float) -> float | int:
    """Seconds as an int when whole (``1795597606``, not ``1795597606.0``), else as they are."""
    return int(seconds) if float(seconds).is_integer() else seconds
