"""The statsd line protocol: Etsy lines, DogStatsD tags and the InfluxDB/Telegraf tag style.

``name[,k=v...]:value[:value...]|type[|@rate][|#k:v,k2,...]`` with types ``c g ms h s d``, one metric
per line, many lines per datagram. ``+N``/``-N`` change a gauge; a plain value sets it. DogStatsD
extension fields this daemon has no use for (``|c:`` container, ``|T`` timestamp, ``|e:`` …) are
ignored; events (``_e{``) and service checks (``_sc|``) are counted and dropped.
"""

from __future__ import annotations

from itertools import compress
from operator import not_
from typing import Any

from stages.model import MetricType, Sample, Tags, tag_tuple
from stages.receiver.parsers.base import (
    CONTROL_CHARS,
    NUMBERS,
    ParseError,
    check_tag,
    metric_name,
    number,
    sample_rate,
)
from stages.receiver.tally import ORDERED_TYPES

COUNTER = int(MetricType.COUNTER)
SET = int(MetricType.SET)
GAUGE = int(MetricType.GAUGE)
GAUGE_DELTA = int(MetricType.GAUGE_DELTA)
#: Distinct lines, and line identities (all but the value), remembered; past this they start afresh.
MAX_REMEMBERED = 20_000


class _Memory:
    """What earlier lines taught, valid for one set of default tags (the receiver has one)."""

    defaults: dict[str, str] | None = None
    #: whole line → its sample, for samples whose order does not matter (immutable tuples: one can
    #: stand for every repeat); see _remember_line for what a full table keeps
    lines: dict[str, Sample] = {}
    #: whole line → its sample, for gauges (kept apart: a datagram of them cannot be just counted)
    gauge_lines: dict[str, Sample] = {}
    #: (head, tail) → (name, type, rate, tags)
    identities: dict[tuple[str, str], tuple[str, int, float, Tags]] = {}


def _remember(table: dict[Any, Any], key: Any, value: Any) -> None:
    if len(table) >= MAX_REMEMBERED:
        table.clear()
    table[key] = value

TYPE_CODES: dict[str, int] = {
    "c": int(MetricType.COUNTER),
    "g": int(MetricType.GAUGE),
    "ms": int(MetricType.TIMER),
    "h": int(MetricType.HISTOGRAM),
    "d": int(MetricType.DISTRIBUTION),
    "s": int(MetricType.SET),
}


def accepts(text: str) -> bool:
    return True


def split_remembered(lines: list[str], defaults: dict[str, str]) -> tuple[list[Sample], list[str]]:
    """The samples of every line seen before (gauges aside), and the other lines, in order.

    The hot path of a busy receiver, in C but for a few calls. The other lines go to :func:`parse`:
    new lines, bad lines, empty lines and gauges (whose order counting would lose). No remembered
    line starts with ``{``, ``[`` or whitespace (see :func:`_remember_line`), so none of them can be
    where another format's document begins.
    """
    if defaults is not _Memory.defaults:
        return [], lines
    # Remembered lines passed every check when first parsed, control characters included.
    samples = list(map(_Memory.lines.get, lines))
    if None not in samples:
        return samples, []  # type: ignore[return-value]
    return list(filter(None, samples)), list(compress(lines, map(not_, samples)))  # type: ignore[arg-type]


def _remember_line(table: dict[str, Sample], line: str, sample: Sample) -> None:
    """Remember a line's sample, unless it starts with ``{``, ``[`` or whitespace (where a JSON payload may).

    A full table keeps its counter lines (while they fill at most half of it) and forgets the rest:
    timer values and set members vary and would otherwise clear out the counters that repeat.
    """
    first = line[:1]
    if first == "{" or first == "[" or first.isspace():
        return
    if len(table) >= MAX_REMEMBERED:
        counters = {known: kept for known, kept in table.items() if kept[1] == COUNTER}
        table.clear()
        if len(counters) <= MAX_REMEMBERED // 2:
            table.update(counters)
    table[line] = sample


def parse(text: str, defaults: dict[str, str], out: list[Sample], bad: dict[str, int]) -> None:
    """Append every good line's samples to ``out``; count each bad line in ``bad`` by reason."""
    if defaults is not _Memory.defaults:
        _Memory.defaults = defaults
        _Memory.lines.clear()
        _Memory.gauge_lines.clear()
        _Memory.identities.clear()
    check_controls = CONTROL_CHARS.search(text) is not None
    lines, gauge_lines, identities, numbers = _Memory.lines, _Memory.gauge_lines, _Memory.identities, NUMBERS
    append = out.append
    for line in text.split("\n"):
        if not check_controls:
            # The hot path, inline and without calls: a line seen before, or one whose identity and
            # value were both seen before.
            sample = lines.get(line) or gauge_lines.get(line)
            if sample is not None:
                append(sample)
                continue
            head, _, rest = line.partition(":")
            value, bar, tail = rest.partition("|")
            meta = identities.get((head, tail)) if bar else None
            if meta is not None:
                mtype = meta[1]
                if mtype == SET:
                    if value:
                        sample = (meta[0], mtype, value, meta[2], meta[3])
                        append(sample)
                        _remember_line(lines, line, sample)
                        continue
                else:
                    number_value = numbers.get(value)
                    if number_value is not None:
                        if mtype == GAUGE and value[0] in "+-":
                            mtype = GAUGE_DELTA
                        sample = (meta[0], mtype, number_value, meta[2], meta[3])
                        _remember_line(gauge_lines if mtype in ORDERED_TYPES else lines, line, sample)
                        append(sample)
                        continue
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            continue
        try:
            if check_controls and CONTROL_CHARS.search(line):
                raise ParseError("control_char")
            parse_line(line, defaults, out)
        except ParseError as exc:
            bad[exc.reason] = bad.get(exc.reason, 0) + 1


def parse_line(line: str, defaults: dict[str, str], out: list[Sample]) -> None:
    """Parse one line into ``out`` (several samples for DogStatsD multi-value packing)."""
    head, sep, rest = line.partition(":")
    if not sep:
        raise ParseError("service_check_unsupported" if line.startswith("_sc|") else "no_value")
    text, bar, tail = rest.partition("|")
    if not bar:
        raise ParseError("no_type")
    # Everything but the value (name, type, rate, tags) repeats from line to line: parsed once.
    identity = (head, tail)
    meta = _Memory.identities.get(identity) if defaults is _Memory.defaults else None
    if meta is None:
        meta = _identity(head, tail, defaults)
        if defaults is _Memory.defaults:
            _remember(_Memory.identities, identity, meta)
    name, mtype, rate, flat = meta
    if mtype == SET:
        if not text:
            raise ParseError("bad_value")
        out.append((name, mtype, text, rate, flat))
        return
    if ":" not in text:
        out.append((name, _gauge_kind(mtype, text), number(text), rate, flat))
        return
    # A packed line is all or nothing: no sample of it lands if one value is bad.
    pieces = text.split(":")
    values = [number(piece) for piece in pieces]
    out.extend((name, _gauge_kind(mtype, piece), value, rate, flat)
               for piece, value in zip(pieces, values, strict=True))


def _identity(head: str, tail: str, defaults: dict[str, str]) -> tuple[str, int, float, Tags]:
    """(name, type, rate, tags) of a line's head (``name[,k=v]``) and tail (``type|@rate|#tags``)."""
    if head.startswith("_e{"):
        raise ParseError("event_unsupported")
    if head.startswith("_sc|"):
        raise ParseError("service_check_unsupported")
    fields = tail.split("|")
    mtype = TYPE_CODES.get(fields[0])
    if mtype is None:
        raise ParseError("unknown_type")
    tags: dict[str, str] = {}
    rate = _extension_fields(fields, tags)
    if "," in head:
        name_part, *influx_tags = head.split(",")
        for pair in influx_tags:
            key, eq, value = pair.partition("=")
            if not eq:
                raise ParseError("bad_tag")
            check_tag(key, value, tags)
        name = metric_name(name_part)
    else:
        name = metric_name(head)
    return (name, mtype, rate, tag_tuple(tags, defaults))


def _gauge_kind(mtype: int, text: str) -> int:
    """``+N``/``-N`` on a gauge is a change, not a new value."""
    if mtype == MetricType.GAUGE and text and text[0] in "+-":
        return int(MetricType.GAUGE_DELTA)
    return mtype


def _extension_fields(fields: list[str], tags: dict[str, str]) -> float:
    """Read ``@rate`` and ``#tags`` from the fields after the type; returns the sample rate."""
    rate = 1.0
    for field in fields[1:]:
        if not field:
            continue
        if field[0] == "@":
            rate = sample_rate(number(field[1:]))
        elif field[0] == "#":
            _dogstatsd_tags(field[1:], tags)
    return rate


def _dogstatsd_tags(text: str, tags: dict[str, str]) -> None:
    for item in text.split(","):
        if item:
            key, _, value = item.partition(":")
            check_tag(key, value, tags)
