"""The capture file (stages.control.capture_file): round trip, the golden file, and what is refused or
replayed up to where: a truncated file, a foreign one, a newer version, damage in the middle."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from stages.control.capture_file import (
    CLOSE,
    DATAGRAM,
    MAGIC,
    STREAM,
    CaptureDamaged,
    CaptureFileError,
    CaptureReader,
    CaptureTruncated,
    CaptureWriter,
    Record,
)

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "capture" / "capture.v1.bin"
HEADER = {"started": 1700000000.25, "pystatsd": "golden", "host": "golden-host"}
TRAILER = {"dropped": 0, "ended": "duration", "receivers": {"receiver": {"dropped": 0}}}
#: Two datagrams, a stream connection's two chunks and its close, on three listeners.
RECORDS = [
    Record(DATAGRAM, 1700000000.5, "udp://127.0.0.1:8125", 0, b"api.hits:1|c|#env:prod\napi.ms:12|ms"),
    Record(STREAM, 1700000000.75, "tcp://127.0.0.1:8125", 1, b"q.depth:12|g\n"),
    Record(DATAGRAM, 1700000001.0, "unixgram:///run/pystatsd/statsd.sock", 0, b"users:u42|s"),
    Record(STREAM, 1700000001.25, "tcp://127.0.0.1:8125", 1, b"q.depth:-2|g\nlast-without-newline:1|c"),
    Record(CLOSE, 1700000001.5, "tcp://127.0.0.1:8125", 1, b""),
]


def written(records: list[Record], blocks: bool = False) -> bytes:
    """A whole file of ``records``; with ``blocks`` every record is a block of its own."""
    out = io.BytesIO()
    writer = CaptureWriter(out, HEADER)
    for record in records:
        writer.add(record.kind, record.time, record.listener, record.connection, record.payload)
        if blocks:
            writer.flush()
    writer.finish(TRAILER)
    assert writer.size == len(out.getvalue())
    return out.getvalue()


def read(data: bytes) -> tuple[CaptureReader, list[Record]]:
    reader = CaptureReader(io.BytesIO(data), "x.cap")
    return reader, list(reader.records())


def test_what_is_written_reads_back_record_for_record_with_header_and_trailer() -> None:
    reader, records = read(written(RECORDS))
    assert records == RECORDS
    assert reader.header == {"format": "pystatsd.capture.v1", **HEADER}
    assert reader.trailer == {"records": 5, **TRAILER}


def test_the_golden_v1_file_reads_back_to_the_records() -> None:
    reader, records = read(GOLDEN.read_bytes())
    assert records == RECORDS
    assert reader.header == {"format": "pystatsd.capture.v1", **HEADER}
    assert reader.trailer == {"records": 5, **TRAILER}
    # The uncompressed part is fixed bytes (zstd's own may differ between library versions).
    assert written(RECORDS)[:60] == GOLDEN.read_bytes()[:60]


def test_a_foreign_file_is_refused_saying_so() -> None:
    for data in (b"", b"counter:1|c\n", b"\x28\xb5\x2f\xfd" + bytes(40)):
        with pytest.raises(CaptureFileError, match="is not a pystatsd capture file"):
            read(data)


def test_a_file_of_a_newer_version_is_refused_saying_so() -> None:
    data = bytearray(written(RECORDS))
    struct.pack_into(">H", data, len(MAGIC), 2)
    with pytest.raises(CaptureFileError, match="format version 2, written by a newer pystatsd: this one reads "
                                               "version 1"):
        read(bytes(data))


def test_a_truncated_file_is_refused_after_the_records_before_the_cut() -> None:
    data = written(RECORDS, blocks=True)
    with pytest.raises(CaptureFileError, match="truncated: it ends inside its header"):
        read(data[:10])
    for cut in (len(data) - 3, len(data) - 40):
        reader = CaptureReader(io.BytesIO(data[:cut]), "x.cap")
        got: list[Record] = []
        with pytest.raises(CaptureTruncated, match="x.cap is truncated") as caught:
            got.extend(reader.records())
        assert got == RECORDS[:caught.value.records]
        assert caught.value.records >= 4 and caught.value.offset < cut


def test_damage_in_the_middle_stops_at_its_block_saying_which_record_and_byte() -> None:
    data = written(RECORDS, blocks=True)
    clean = CaptureReader(io.BytesIO(data), "x.cap")
    # Where the third block begins: the records before it are good.
    offsets = []
    for _ in clean.records():
        offsets.append(clean.offset)
    third = offsets[1]
    damaged = bytearray(data)
    damaged[third + 12] ^= 0xFF
    reader = CaptureReader(io.BytesIO(bytes(damaged)), "x.cap")
    got: list[Record] = []
    with pytest.raises(CaptureDamaged) as caught:
        got.extend(reader.records())
    assert not isinstance(caught.value, CaptureTruncated)
    assert got == RECORDS[:2]
    assert (caught.value.records, caught.value.offset) == (2, third)
    assert str(caught.value) == (f"x.cap is damaged (a section's checksum does not match) at byte {third}, "
                                 "after record 2")


if __name__ == "__main__":  # writes the golden file once, when the format is fixed
    GOLDEN.write_bytes(written(RECORDS))
