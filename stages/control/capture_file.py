"""The capture file (``pystatsd capture`` writes it, ``pystatsd replay`` reads it): ``pystatsd.capture.v1``.

Layout, every integer big-endian::

    MAGIC (8 bytes)  version (u16)  header length (u32)  header (JSON: format, started, pystatsd, host)
    block*           b"B" compressed length (u32) CRC-32 of the compressed bytes (u32) one zstd frame
    trailer          b"T" length (u32) CRC-32 (u32) JSON (records, dropped, ended, receivers)

A block's frame holds whole records: kind (u8) time (f64, unix seconds) listener (u16) connection (u32)
length (u32) payload. A listener is declared (:data:`LISTENER`, its URL as payload) before a record names
its index; a stream connection's records share its number and :data:`CLOSE` ends it.

Blocks are compressed apart and checked by their CRC, so damage is found at the block it hit and what
comes before it still replays; a file without its trailer was cut short (a capture killed, a disk full).
The magic and version come before anything compressed: a foreign or newer file is refused at once.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

FORMAT = "pystatsd.capture.v1"
MAGIC = b"\x89PSDCAP\n"
VERSION = 1
DATAGRAM, STREAM, CLOSE, LISTENER = 1, 2, 3, 4
KINDS = (DATAGRAM, STREAM, CLOSE, LISTENER)

_PREAMBLE = struct.Struct(">8sHI")
_SECTION = struct.Struct(">cII")
_RECORD = struct.Struct(">BdHII")
#: Raw record bytes gathered before a block is compressed and written.
BLOCK_BYTES = 256 * 1024


class CaptureFileError(Exception):
    """The file is not one this pystatsd can read; the message says why and where."""


class CaptureDamaged(CaptureFileError):
    """The file is damaged or cut short after ``records`` good records, at byte ``offset`` of the file."""

    def __init__(self, message: str, records: int, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}, after record {records}")
        self.records = records
        self.offset = offset


class CaptureTruncated(CaptureDamaged):
    """The file ends before its trailer: cut short rather than damaged."""


@dataclass(frozen=True)
class Record:
    kind: int
    time: float
    listener: str
    connection: int
    payload: bytes


class CaptureWriter:
    """Appends records to an open file (the caller made it private and new); ``size`` is the bytes written."""

    def __init__(self, handle: BinaryIO, header: dict[str, Any]) -> None:
        self.handle = handle
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.pending = bytearray()
        self.listeners: dict[str, int] = {}
        self.records = 0
        data = json.dumps({"format": FORMAT, **header}, sort_keys=True).encode()
        self.size = 0
        self._write(_PREAMBLE.pack(MAGIC, VERSION, len(data)) + data)

    def add(self, kind: int, time: float, listener: str, connection: int, payload: bytes = b"") -> None:
        index = self.listeners.get(listener)
        if index is None:
            index = self.listeners[listener] = len(self.listeners)
            self._pack(LISTENER, time, index, 0, listener.encode())
        self._pack(kind, time, index, connection, payload)
        self.records += 1
        if len(self.pending) >= BLOCK_BYTES:
            self.flush()

    def _pack(self, kind: int, time: float, index: int, connection: int, payload: bytes) -> None:
        self.pending += _RECORD.pack(kind, time, index, connection, len(payload))
        self.pending += payload

    def flush(self) -> None:
        """Compress and write what was added since the last block."""
        if self.pending:
            frame = self.compressor.compress(bytes(self.pending))
            self.pending.clear()
            self._write(_SECTION.pack(b"B", len(frame), zlib.crc32(frame)) + frame)

    def finish(self, trailer: dict[str, Any]) -> None:
        """The last block and the trailer; the file is then whole (the caller closes it)."""
        self.flush()
        data = json.dumps({"records": self.records, **trailer}, sort_keys=True).encode()
        self._write(_SECTION.pack(b"T", len(data), zlib.crc32(data)) + data)
        self.handle.flush()

    def _write(self, data: bytes) -> None:
        self.handle.write(data)
        self.size += len(data)


class CaptureReader:
    """A capture file's header (read and checked at once) and its records, in order."""

    def __init__(self, handle: BinaryIO, name: str) -> None:
        self.handle = handle
        self.name = name
        preamble = handle.read(_PREAMBLE.size)
        if preamble[:len(MAGIC)] != MAGIC[:len(preamble)] or not preamble:
            raise CaptureFileError(f"{name} is not a pystatsd capture file (no {FORMAT} header)")
        if len(preamble) < _PREAMBLE.size:
            raise CaptureFileError(f"{name} is truncated: it ends inside its header")
        _, version, length = _PREAMBLE.unpack(preamble)
        if version > VERSION:
            raise CaptureFileError(f"{name} is a capture of format version {version}, written by a newer "
                                   f"pystatsd: this one reads version {VERSION} and older")
        data = handle.read(length)
        try:
            if len(data) < length:
                raise ValueError("short")
            self.header: dict[str, Any] = json.loads(data)
        except ValueError:
            raise CaptureFileError(f"{name} is truncated or damaged: its header cannot be read") from None
        self.offset = _PREAMBLE.size + length
        #: The trailer, once :meth:`records` reached it.
        self.trailer: dict[str, Any] | None = None

    def records(self) -> Iterator[Record]:
        """Every record up to the trailer; CaptureDamaged where the file is damaged or ends early."""
        decompressor = zstandard.ZstdDecompressor()
        listeners: list[str] = []
        count = 0
        while True:
            start = self.offset
            section = self.handle.read(_SECTION.size)
            if len(section) < _SECTION.size:
                raise CaptureTruncated(f"{self.name} is truncated (it ends before its trailer: was the capture "
                                       "killed?)", count, start)
            tag, length, crc = _SECTION.unpack(section)
            data = self.handle.read(length)
            if tag not in (b"B", b"T"):
                raise CaptureDamaged(f"{self.name} is damaged (a section of unknown kind)", count, start)
            if len(data) < length:
                raise CaptureTruncated(f"{self.name} is truncated (a section cut short)", count, start)
            if zlib.crc32(data) != crc:
                raise CaptureDamaged(f"{self.name} is damaged (a section's checksum does not match)", count, start)
            self.offset = start + _SECTION.size + length
            if tag == b"T":
                try:
                    self.trailer = json.loads(data)
                except ValueError:
                    raise CaptureDamaged(f"{self.name} is damaged (its trailer)", count, start) from None
                return
            try:
                raw = decompressor.decompress(data)
            except zstandard.ZstdError:
                raise CaptureDamaged(f"{self.name} is damaged (a block does not decompress)", count, start) from None
            block = list(_unpack(raw, listeners))
            if block is None or any(r is None for r in block):
                raise CaptureDamaged(f"{self.name} is damaged (a record cannot be read)", count, start)
            for record in block:
                assert record is not None
                count += 1
                yield record


def _unpack(raw: bytes, listeners: list[str]) -> Iterator[Record | None]:
    """The records of one block's bytes (None for one that cannot be read; nothing after it)."""
    at = 0
    while at < len(raw):
        if at + _RECORD.size > len(raw):
            yield None
            return
        kind, time, index, connection, length = _RECORD.unpack_from(raw, at)
        at += _RECORD.size
        payload = raw[at:at + length]
        at += length
        if len(payload) < length or kind not in KINDS:
            yield None
            return
        if kind == LISTENER:
            listeners.append(payload.decode(errors="replace"))
            continue
        if index >= len(listeners):
            yield None
            return
        yield Record(kind, time, listeners[index], connection, payload)
