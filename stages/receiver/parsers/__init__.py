"""Input formats, tried in order per datagram: the first whose ``accepts`` says yes parses it.

A format is a module with ``accepts(text) -> bool`` and ``parse(text, defaults, out, bad)``; adding
one is a file plus an entry here. Bursts of plain statsd lines take a faster path (see
:func:`tally_payloads`).
"""

from __future__ import annotations

import re
from types import ModuleType

from stages.model import Sample
from stages.receiver.parsers import json_original, statsd
from stages.receiver.tally import Tally

#: A line that starts, after any whitespace, like a JSON document (what json_original.accepts says
#: of a payload starting with that line); one pass over the text, whitespace-only lines included.
_DOCUMENT_START = re.compile(r"^\s*[{\[]", re.MULTILINE)

PARSERS: dict[str, ModuleType] = {
    "json": json_original,
    "statsd": statsd,
}


def tally_payloads(payloads: list[bytes], defaults: dict[str, str], tally: Tally, bad: dict[str, int]) -> None:
    """Parse a burst of datagrams (or chunks of complete lines from a stream) into ``tally``.

    Plain statsd bursts, the bulk of any busy receiver's traffic, are read as one text: lines stand
    on their own in that format, so it gives what parsing each payload would, for a fraction of the
    calls. A burst that is not valid UTF-8, or has a line that may start another format's document,
    is parsed payload by payload.
    """
    text = _joined_text(payloads)
    if text is not None:
        known, missed = statsd.split_remembered(text.split("\n"), defaults)
        rest = "\n".join(missed)
        # A JSON payload begins with a line no statsd memory holds: only the lines missed need a look.
        if _DOCUMENT_START.search(rest) is None:
            if known:
                tally.add_counted(known)
            if rest:
                samples: list[Sample] = []
                statsd.parse(rest, defaults, samples, bad)
                tally.add(samples)
            return
    for payload in payloads:
        samples = []
        parse_datagram(payload, defaults, samples, bad)
        tally.add(samples)


def _joined_text(payloads: list[bytes]) -> str | None:
    """The payloads as one text of lines, or None where they are not valid UTF-8."""
    try:
        text = b"\n".join(payloads).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\n\n" in text:
        # Lines ended by newline (what streams and some clients send): the empty lines between would only be skipped.
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
