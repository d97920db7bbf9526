"""Input formats, tried in order per datagram: the first whose ``accepts`` says yes parses it.

A format is a module with ``accepts(text) -> bool`` and ``parse(text, defaults, out, bad)``; adding
one is a file plus an entry here. Bursts of plain statsd lines take a faster path (see
:func:`tally_payloads`).
"""

from __future__ import annotations

import re
from operator import itemgetter
from types import ModuleType

from stages.model import Sample
from stages.receiver.parsers import json_original, statsd
from stages.receiver.tally import Tally

#: A payload starting with one of these may be JSON (see json_original.accepts).
_OTHER_FORMAT_START = re.compile(rb"[{\[\s]")
#: A line of a joined burst that starts like JSON (one regex pass is cheaper than two ``in`` scans).
_JSON_LINE_START = re.compile(r"\n[{\[]")
_FIRST_BYTE = itemgetter(0)

PARSERS: dict[str, ModuleType] = {
    "json": json_original,
    "statsd": statsd,
}


def tally_payloads(payloads: list[bytes], defaults: dict[str, str], tally: Tally, bad: dict[str, int]) -> None:
    """Parse a burst of datagrams (or chunks of complete lines from a stream) into ``tally``.

    Plain statsd bursts, the bulk of any busy receiver's traffic, are read as one text: lines stand
    on their own in that format, so it gives what parsing each payload would, for a fraction of the
    calls. The rest is parsed payload by payload.
    """
    text = _plain_statsd(payloads)
    if text is None:
        for payload in payloads:
            samples: list[Sample] = []
            parse_datagram(payload, defaults, samples, bad)
            tally.add(samples)
        return
    missed = statsd.count_remembered(text.split("\n"), defaults, tally)
    if missed:
        samples = []
        statsd.parse("\n".join(missed), defaults, samples, bad)
        tally.add(samples)


def _plain_statsd(payloads: list[bytes]) -> str | None:
    """The payloads as one text if they are valid UTF-8 and no line of them can be another format."""
    try:
        firsts = bytes(map(_FIRST_BYTE, payloads))
        text = b"\n".join(payloads).decode("utf-8")
    except (IndexError, UnicodeDecodeError):
        return None
    if _OTHER_FORMAT_START.search(firsts) or _JSON_LINE_START.search(text):
        return None
    if "\n\n" in text:
        # Lines ended by newline (what streams carry): the empty lines between would only be skipped.
        text = text.replace("\n\n", "\n")
    return text[:-1] if text[-1:] == "\n" else text


def parse_datagram(data: bytes, defaults: dict[str, str], out: list[Sample], bad: dict[str, int]) -> None:
    """Parse one datagram into ``out``, counting bad lines by reason in ``bad``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = _valid_lines(data, bad)
    if "\n{" in text and not json_original.accepts(text):
        # Lines of different formats in one payload (a stream carries whatever its clients wrote).
        _parse_runs(text, defaults, out, bad)
        return
    _parser_for(text).parse(text, defaults, out, bad)


def _parser_for(text: str) -> ModuleType:
    for parser in PARSERS.values():
        if parser.accepts(text):
            return parser
    raise AssertionError("the last format in PARSERS must accept anything")


def _parse_runs(text: str, defaults: dict[str, str], out: list[Sample], bad: dict[str, int]) -> None:
    """Parse each run of consecutive lines of one format with that format's parser."""
    run: list[str] = []
    run_parser: ModuleType | None = None
    for line in text.split("\n"):
        parser = _parser_for(line)
        if parser is not run_parser and run:
            run_parser.parse("\n".join(run), defaults, out, bad)  # type: ignore[union-attr]
            run = []
        run_parser = parser
        run.append(line)
    if run and run_parser is not None:
        run_parser.parse("\n".join(run), defaults, out, bad)


def _valid_lines(data: bytes, bad: dict[str, int]) -> str:
    """The lines that are valid UTF-8; each other line is counted, so its neighbours survive."""
    kept = []
    for line in data.split(b"\n"):
        try:
            kept.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            bad["invalid_utf8"] = bad.get("invalid_utf8", 0) + 1
    return "\n".join(kept)
