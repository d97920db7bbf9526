"""The statsd line protocol: Etsy lines, DogStatsD tags and the InfluxDB/Telegraf tag style.

``name[,k=v...]:value[:value...]|type[|@rate][|#k:v,k2,...][|T<unix seconds>][|c:<container id>]`` with
types ``c g ms h s d``, one metric per line, many lines per datagram. ``+N``/``-N`` change a gauge; a
plain value sets it. A ``|T`` timestamp is checked against the receiver's open interval
(:class:`~.base.OpenInterval`); a ``|c:`` container id becomes a tag when the options say so
(:class:`~.base.LineOptions`). Other DogStatsD extension fields (``|e:``, ``|card:`` …) are ignored.
Events (``_e{``) and service checks (``_sc|``) are read (:mod:`.dogstatsd_records`) into the
options' ``records`` (without one they are dropped, counted under ``event_unsupported`` or
``service_check_unsupported``); a malformed one is counted under the reason it is bad.
"""

from __future__ import annotations

from stages.common.model import MetricType, Sample, Tags, tag_tuple
from stages.receiver.parsers import dogstatsd_records
from stages.receiver.parsers.base import (
    CONTROL_CHARS,
    PLAIN,
    LineOptions,
    ParseError,
    check_counted,
    check_tag,
    container_id,
    dogstatsd_stamp,
    dogstatsd_tags,
    metric_name,
    number,
    sample_rate,
)

COUNTER = int(MetricType.COUNTER)
SET = int(MetricType.SET)

TYPE_CODES: dict[str, int] = {
    "c": int(MetricType.COUNTER),
    "g": int(MetricType.GAUGE),
    "ms": int(MetricType.TIMER),
    "h": int(MetricType.HISTOGRAM),
    "d": int(MetricType.DISTRIBUTION),
    "s": int(MetricType.SET),
}


#: Line identities a parser remembers before it starts afresh: a busy host's series, many times over.
MAX_IDENTITIES = 100_000

#: name, type, rate, tags and the ``|T`` stamp (None without one)
Identity = tuple[str, int, float, Tags, int | None]


class Parser:
    """The statsd parser of one receiver: its agent's default tags, and what the lines' identities
    (everything but the value: name, type, rate, tags) were found to mean, so a series seen before
    is not taken apart again. Only good identities are remembered; what a line means never depends
    on it (the compiled window, which remembers nothing, gives the same)."""

    def __init__(self, defaults: dict[str, str], options: LineOptions = PLAIN) -> None:
        self.defaults = defaults
        self.options = options
        self.identities: dict[tuple[str, str], Identity] = {}

    def parse(self, text: str, out: list[Sample], bad: dict[str, int]) -> None:
        """Append every good line's samples to ``out``; count each bad line in ``bad`` by reason."""
        check_controls = CONTROL_CHARS.search(text) is not None
        for line in text.split("\n"):
            if line.endswith("\r"):
                line = line[:-1]
            if not line:
                continue
            try:
                if check_controls and CONTROL_CHARS.search(line):
                    raise ParseError("control_char")
                self.parse_line(line, out)
            except ParseError as exc:
                bad[exc.reason] = bad.get(exc.reason, 0) + 1

    def parse_line(self, line: str, out: list[Sample]) -> None:
        """Parse one line into ``out`` (several samples for DogStatsD multi-value packing)."""
        head, sep, rest = line.partition(":")
        if not sep:
            if self.record_line(line):
                return
            raise ParseError("no_value")
        text, bar, tail = rest.partition("|")
        if not bar:
            if self.record_line(line):
                return
            raise ParseError("no_type")
        identity = self.identities.get((head, tail))
        if identity is None:
            # Only a line whose identity is new can be a record: no good line is asked twice.
            if self.record_line(line):
                return
            identity = _identity(head, tail, self.defaults, self.options.keep_container_id)
            if len(self.identities) >= MAX_IDENTITIES:
                self.identities.clear()
            self.identities[(head, tail)] = identity
        stamp = identity[4]
        if stamp is None:
            _samples(identity, text, out)
            return
        # The line is read whole first: a bad one counts under its fault, whenever it was stamped.
        samples: list[Sample] = []
        _samples(identity, text, samples)
        if self.options.open_interval is not None:
            self.options.open_interval.check(stamp)
        out.extend(samples)

    def record_line(self, line: str) -> bool:
        """Whether ``line`` is an event or a service check, taken into the options' ``records``; raises
        ParseError when it is malformed, or when there is nowhere to take it (``<kind>_unsupported``). Its
        fields and tags hold colons and bars anywhere (``_sc|x|0|#env:prod``): it is known by its start."""
        if not dogstatsd_records.is_record(line):
            return False
        got = dogstatsd_records.record(line, self.defaults, self.options.keep_container_id)
        if self.options.records is None:
            raise ParseError(f"{got['type']}_unsupported")
        self.options.records.append(got)
        return True


def parse(text: str, defaults: dict[str, str], out: list[Sample], bad: dict[str, int],
          options: LineOptions = PLAIN) -> None:
    """:meth:`Parser.parse` for text that needs no parser of its own (it remembers nothing after)."""
    Parser(defaults, options).parse(text, out, bad)


def _samples(identity: Identity, text: str, out: list[Sample]) -> None:
    """The samples of a line's value text (``v[:v...]``, or a set member)."""
    name, mtype, rate, flat, _ = identity
    if mtype == SET:
        if not text:
            raise ParseError("bad_value")
        out.append((name, mtype, text, rate, flat))
        return
    if ":" not in text:
        value = number(text)
        if mtype == COUNTER:
            check_counted(value, rate)
        out.append((name, _gauge_kind(mtype, text), value, rate, flat))
        return
    # A packed line is all or nothing: no sample of it lands if one value is bad.
    pieces = text.split(":")
    values = [number(piece) for piece in pieces]
    if mtype == COUNTER:
        for value in values:
            check_counted(value, rate)
    out.extend((name, _gauge_kind(mtype, piece), value, rate, flat)
               for piece, value in zip(pieces, values, strict=True))


def _identity(head: str, tail: str, defaults: dict[str, str], keep_container_id: bool) -> Identity:
    """(name, type, rate, tags, stamp) of a line's head (``name[,k=v]``) and tail (``type|@rate|#tags...``)."""
    fields = tail.split("|")
    mtype = TYPE_CODES.get(fields[0])
    if mtype is None:
        raise ParseError("unknown_type")
    tags: dict[str, str] = {}
    rate, stamp = _extension_fields(fields, tags, keep_container_id)
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
    return (name, mtype, rate, tag_tuple(tags, defaults), stamp)


def _gauge_kind(mtype: int, text: str) -> int:
    """``+N``/``-N`` on a gauge is a change, not a new value."""
    if mtype == MetricType.GAUGE and text and text[0] in "+-":
        return int(MetricType.GAUGE_DELTA)
    return mtype


def _extension_fields(fields: list[str], tags: dict[str, str], keep_container_id: bool) -> tuple[float, int | None]:
    """Read ``@rate``, ``#tags``, ``T`` and ``c:`` from the fields after the type, in their order (a
    later field wins a shared tag key); returns the sample rate and the stamp (the last of each wins)."""
    rate = 1.0
    stamp = None
    for field in fields[1:]:
        if not field:
            continue
        if field[0] == "@":
            rate = sample_rate(number(field[1:]))
        elif field[0] == "#":
            dogstatsd_tags(field[1:], tags)
        elif field[0] == "T":
            stamp = dogstatsd_stamp(field[1:])
        elif keep_container_id and field.startswith("c:"):
            container_id(field, tags)
    return rate, stamp

