"""Input formats, and the one rule that says which format each part of a payload is in.

The rule: a JSON document (the original daemon's format, :mod:`.json_original`) is a whole payload,
or else one line; a line is JSON when its first non-whitespace character is ``{`` or ``[``; every
other line is a statsd line (:mod:`.statsd`). So a payload may mix the two, in any order, and a bad
line costs only itself. A new format is a module with ``starts_document``-style routing added here.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby

from stages.common.model import Sample
from stages.receiver.parsers import json_original, statsd
from stages.receiver.parsers.base import PLAIN, LineOptions, ParseError


def parse_payload(data: bytes, defaults: dict[str, str], out: list[Sample], bad: dict[str, int],
                  options: LineOptions = PLAIN) -> None:
    """Parse one datagram (or chunk of complete stream lines) into ``out``, counting bad lines in ``bad``."""
    text = decode_lines(data, bad)
    if json_original.starts_document(text):
        try:
            document = json_original.load(text)
        except ParseError:
            pass  # not one document: line by line below, where each bad line is counted
        else:
            json_original.add_objects(document, defaults, out, bad, options.open_interval)
            return
    for is_json, lines in groupby(text.split("\n"), json_original.starts_document):
        if is_json:
            for line in lines:
                json_original.parse(line, defaults, out, bad, options.open_interval)
        else:
            statsd.parse("\n".join(lines), defaults, out, bad, options)


def statsd_lines(defaults: dict[str, str],
                 options: LineOptions = PLAIN) -> Callable[[bytes, list[Sample], dict[str, int]], None]:
    """The batch window's parser: the statsd lines of ``data``, with ``defaults`` merged into their tags."""
    parser = statsd.Parser(defaults, options)

    def parse_lines(data: bytes, out: list[Sample], bad: dict[str, int]) -> None:
        parser.parse(decode_lines(data, bad), out, bad)

    return parse_lines


def payload_parser(defaults: dict[str, str],
                   options: LineOptions = PLAIN) -> Callable[[bytes, list[Sample], dict[str, int]], None]:
    """:func:`parse_payload` with ``defaults`` and ``options`` bound, as the receiver hands it payloads the
    window leaves."""

    def parse(data: bytes, out: list[Sample], bad: dict[str, int]) -> None:
        parse_payload(data, defaults, out, bad, options)

    return parse


def decode_lines(data: bytes, bad: dict[str, int]) -> str:
    """The text of ``data``; a line that is not valid UTF-8 is counted and left out, so its neighbours survive."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    kept = []
    for line in data.split(b"\n"):
        try:
            kept.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            bad["invalid_utf8"] = bad.get("invalid_utf8", 0) + 1
    return "\n".join(kept)
