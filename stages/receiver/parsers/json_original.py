"""The original pystatsd's JSON datagrams: one object, an array of objects, or one object per line.

``metric_name`` and ``metric_type`` are required. The value is in ``value`` (``count`` too for a
counter, default 1; a trace has none: each object is one event); ``sample_rate`` is optional, and
so is a numeric ``timestamp`` (unix seconds, checked as DogStatsD's ``|T``: :class:`~.base.OpenInterval`).
Every other key is a tag: strings as they are, numbers and booleans as their JSON text; an array,
object or null makes that metric invalid. A ``timestamp`` that is not a JSON number stays a tag, as
the original daemon read every key but its own: its clients switch unchanged.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from stages.common.model import MetricType, Sample, tag_tuple
from stages.receiver.parsers import base
from stages.receiver.parsers.base import OpenInterval, ParseError

JSON_TYPES: dict[str, int] = {
    "counter": int(MetricType.COUNTER),
    "gauge": int(MetricType.GAUGE),
    "guage": int(MetricType.GAUGE),  # the original daemon's spelling, still sent by its clients
    "trace": int(MetricType.TRACE),
    "timer": int(MetricType.TIMER),
    "ms": int(MetricType.TIMER),
    "histogram": int(MetricType.HISTOGRAM),
    "set": int(MetricType.SET),
    "distribution": int(MetricType.DISTRIBUTION),
}

#: Keys that are never tags.
RESERVED = frozenset({"metric_name", "metric_type", "value", "count", "sample_rate"})

#: More than MAX_JSON_DEPTH arrays or objects (an object by its first key) opened before anything
#: else, JSON whitespace between: too deep, known without reading the document (the compiled window
#: makes the same check, so deep input costs neither a json.loads).
_OPENING = r'(?:\[|\{[ \t\n\r]*"[^"\\\x00-\x1f]*"[ \t\n\r]*:)[ \t\n\r]*'
_TOO_DEEP = re.compile(rf"[ \t\n\r]*(?:{_OPENING}){{{base.MAX_JSON_DEPTH + 1}}}")


def starts_document(text: str) -> bool:
    """Whether ``text`` starts like a JSON document: ``{`` or ``[`` after any whitespace."""
    first = text[:1]
    if first.isspace():
        # Stripping the whole datagram costs more than parsing a statsd line: only when needed.
        first = text.lstrip()[:1]
    return first == "{" or first == "["


def parse(text: str, defaults: dict[str, str], out: list[Sample], bad: dict[str, int],
          open_interval: OpenInterval | None = None) -> None:
    """One document: append the samples of every good object to ``out``; count each bad one in ``bad``."""
    try:
        document = load(text)
    except ParseError as exc:
        bad[exc.reason] = bad.get(exc.reason, 0) + 1
        return
    add_objects(document, defaults, out, bad, open_interval)


def add_objects(document: Any, defaults: dict[str, str], out: list[Sample], bad: dict[str, int],
                open_interval: OpenInterval | None = None) -> None:
    """The samples of a loaded document: one object, or an array of them; each bad one counted. A stamped
    object is checked against ``open_interval`` (None: outside a receiver, it is not)."""
    for obj in document if isinstance(document, list) else (document,):
        try:
            out.append(sample_from_object(obj, defaults, open_interval))
        except ParseError as exc:
            bad[exc.reason] = bad.get(exc.reason, 0) + 1


def load(text: str) -> Any:
    """The JSON document ``text``, or ParseError with the reason it is not one."""
    if len(text) > base.MAX_JSON_DEPTH and _TOO_DEEP.match(text):
        raise ParseError("too_deep")
    try:
        return json.loads(text, object_pairs_hook=_object_without_duplicates, parse_constant=_no_constants)
    except RecursionError:
        raise ParseError("too_deep") from None
    except ValueError:
        raise ParseError("bad_json") from None


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ParseError("duplicate_key")
    return obj


def _no_constants(name: str) -> None:
    raise ParseError("non_finite")


def sample_from_object(obj: Any, defaults: dict[str, str], open_interval: OpenInterval | None = None) -> Sample:
    if not isinstance(obj, dict):
        raise ParseError("not_object")
    name, kind = obj.get("metric_name"), obj.get("metric_type")
    if name is None or kind is None:
        raise ParseError("missing_field")
    if not isinstance(name, str):
        raise ParseError("bad_name")
    if not isinstance(kind, str):
        raise ParseError("unknown_type")
    mtype = JSON_TYPES.get(kind.lower())
    if mtype is None:
        raise ParseError("unknown_type")
    _check_text(name)
    stamped = _is_number(obj.get("timestamp"))
    tags: dict[str, str] = {}
    for key, raw in obj.items():
        if key not in RESERVED and not (stamped and key == "timestamp"):
            text = _tag_text(raw)
            _check_text(key)
            _check_text(text)
            base.check_tag(key, text, tags)
    rate = base.sample_rate(_json_number(obj["sample_rate"])) if "sample_rate" in obj else 1.0
    value: float | str
    if mtype == MetricType.TRACE:
        value = 1.0
    elif mtype == MetricType.COUNTER:
        value = _json_number(obj.get("value", obj.get("count", 1)))
        base.check_counted(value, rate)
    elif "value" not in obj:
        raise ParseError("missing_field")
    elif mtype == MetricType.SET:
        value = _tag_text(obj["value"])
        _check_text(value)
    else:
        value = _json_number(obj["value"])
    name = base.metric_name(name)
    if stamped:
        # Read after the rest, as a |T is: a bad object counts under its fault, whenever it was stamped.
        stamp = _stamp(obj["timestamp"])
        if open_interval is not None:
            open_interval.check(stamp)
    return (name, mtype, value, rate, tag_tuple(tags, defaults))


def _is_number(raw: Any) -> bool:
    return isinstance(raw, (int, float)) and not isinstance(raw, bool)


def _stamp(raw: Any) -> float:
    """A numeric ``timestamp``: unix seconds (a fraction is allowed here), at least 0."""
    try:
        stamp = float(raw)
    except OverflowError:
        raise ParseError("bad_timestamp") from None
    if not math.isfinite(stamp) or stamp < 0:
        raise ParseError("bad_timestamp")
    return stamp


def _check_text(text: str) -> None:
    """No control characters, and no lone surrogate (a JSON ``\\ud800`` escape) that UTF-8 cannot carry."""
    if base.CONTROL_CHARS.search(text):
        raise ParseError("control_char")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError("invalid_utf8") from None


def _json_number(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ParseError("bad_value")
    if isinstance(raw, int):
        try:
            return base.check_magnitude(float(raw))
        except OverflowError:
            raise ParseError("non_finite") from None
    if isinstance(raw, float):
        return base.number(repr(raw))
    if isinstance(raw, str):
        return base.number(raw)
    raise ParseError("bad_value")


def _tag_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (bool, int, float)):
        return json.dumps(raw)
    raise ParseError("bad_tag")
