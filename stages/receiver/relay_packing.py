"""The raw relay's packing: what the receiver read, as datagrams of at most ``limit`` bytes, lines unchanged.

The payloads are what the listeners hand the receiver (a datagram, or a run of complete lines from
a stream). Each goes on as it came, the same bytes object, when it fits alone and no neighbour fits
beside it; consecutive payloads that fit together are packed into one datagram (one copy per packed
datagram, joined by a newline where the first did not end with one), which spares a send per
payload when clients send one line per datagram. A payload larger than ``limit`` is cut at line
boundaries. A line longer than ``limit`` goes alone (IP fragments it; it reaches the destination
on loopback and on most paths, where dropping it would be a certain loss), up to
:data:`~pystatsd.client.MAX_UDP_PAYLOAD`; a longer line fits no UDP datagram and is counted.
A JSON document (:func:`~stages.receiver.parsers.json_original.starts_document`) is a whole payload
(it may span lines): it goes alone and whole, never packed or cut.
"""

from __future__ import annotations

from pystatsd.client import MAX_UDP_PAYLOAD
from stages.receiver.parsers.json_original import starts_document

NEWLINE = b"\n"


#: First bytes of a payload that may be a JSON document (``{``, ``[``, or whitespace before one).
MAYBE_DOCUMENT = frozenset(b"{[ \t\n\r\x0b\x0c")


def pack(payloads: list[bytes], limit: int) -> tuple[list[bytes], int]:
    """``payloads`` as datagrams of at most ``limit`` bytes (longer only for one line alone), in order,
    and how many lines were longer than any UDP datagram holds (left out)."""
    datagrams: list[bytes] = []
    #: The pieces of the datagram being filled, with the newlines put between them, and its size.
    parts: list[bytes] = []
    size = 0
    too_long = 0
    for payload in payloads:
        n = len(payload)
        if not n:
            continue
        if n <= limit and payload[0] not in MAYBE_DOCUMENT:
            # The common case, inline: a payload that fits, beside the last one if both fit.
            if parts:
                separator = parts[-1][-1] != 10  # 10: b"\n"
                if size + separator + n <= limit:
                    if separator:
                        parts.append(NEWLINE)
                    parts.append(payload)
                    size += separator + n
                    continue
                datagrams.append(parts[0] if len(parts) == 1 else b"".join(parts))
            parts, size = [payload], n
            continue
        if parts:
            datagrams.append(joined(parts))
            parts, size = [], 0
        if is_document(payload):
            # A JSON document alone, as a whole.
            if n <= MAX_UDP_PAYLOAD:
                datagrams.append(payload)
            else:
                too_long += 1
            continue
        if n <= limit:
            parts, size = [payload], n  # whitespace first, but no document
            continue
        pieces, cut_off = cut(payload, limit)
        too_long += cut_off
        if pieces:
            # Cut as full as the limit allows: only the last piece may take the next payload beside it.
            datagrams.extend(pieces[:-1])
            parts, size = [pieces[-1]], len(pieces[-1])
    if parts:
        datagrams.append(joined(parts))
    return datagrams, too_long


def joined(parts: list[bytes]) -> bytes:
    """One piece as it is (no copy), several as one datagram."""
    return parts[0] if len(parts) == 1 else b"".join(parts)


def cut(payload: bytes, limit: int) -> tuple[list[bytes], int]:
    """``payload`` cut at line boundaries into pieces of at most ``limit`` bytes (a longer line alone),
    and how many lines were longer than :data:`MAX_UDP_PAYLOAD` (left out). The newline at a cut
    goes: a datagram's end ends its last line."""
    pieces: list[bytes] = []
    too_long = 0
    start, end = 0, len(payload)
    while start < end:
        if end - start <= limit:
            pieces.append(payload[start:])
            break
        newline = payload.rfind(NEWLINE, start, start + limit + 1)
        if newline < 0:
            # The line starting here is longer than limit: it goes alone, or not at all.
            newline = payload.find(NEWLINE, start)
            if newline < 0:
                newline = end
            if newline - start <= MAX_UDP_PAYLOAD:
                pieces.append(payload[start:newline])
            else:
                too_long += 1
        elif newline > start:
            pieces.append(payload[start:newline])
        start = newline + 1
    return pieces, too_long


def is_document(payload: bytes) -> bool:
    """Whether ``payload`` is a JSON document (the parsers' rule), decoding only what may be one."""
    first = payload[:1]
    if first in (b"{", b"[") or first.isspace():
        return starts_document(payload[:4096].decode("utf-8", "replace"))
    return False


def lines(datagram: bytes) -> int:
    """The lines of a datagram (what a relay drop counts)."""
    return datagram.count(NEWLINE) + (0 if datagram.endswith(NEWLINE) else 1)
