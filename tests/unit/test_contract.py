"""The wire contract: round trips, v1 golden bytes, and the DecodeError reason for each malformed message.

tests/data/contract/{batch,flush}.v1.bin are the three frames of BATCH/FLUSH below, concatenated,
written once when v1 was fixed. Within v1 header keys may only be added: each addition gets golden
files of its own ({batch,flush}.v1.1.bin: ``sent_before`` and ``covers``; batch.v1.2.bin: ``metrics``),
writers produce the newest,
and readers keep decoding every older file, the added keys taking their defaults. Any other change to
the bytes for the same message is a wire-format change (a new major version).
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from stages import contract
from stages.contract import BATCH_V1, FLUSH_V1, BatchHeader, DecodeError, FlushHeader

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "contract"

BATCH_HEADER = BatchHeader(src="receiver-1", epoch=1_700_000_000_000_000_000, seq=7, ts=1700000000.5, n=2)
SAMPLES = [("api.hits", 1, 3.0, 0.5, ("env", "prod")), ("api.users", 7, "u42", 1.0, ())]
FLUSH_HEADER = FlushHeader(shard=1, shards=4, epoch=1_700_000_000_000_000_000, seq=3,
                           interval_start=1700000000.0, interval=10.0, n=1, final=False,
                           seq_gaps={"receiver-1": 2})
BATCH_HEADER_1 = BatchHeader(src="receiver-1", epoch=1_700_000_000_000_000_000, seq=7, ts=1700000000.5, n=2,
                             sent_before=40)
BATCH_HEADER_2 = BatchHeader(src="receiver-1", epoch=1_700_000_000_000_000_000, seq=7, ts=1700000000.5, n=2,
                             sent_before=40, metrics=5)
FLUSH_HEADER_1 = FlushHeader(shard=1, shards=4, epoch=1_700_000_000_000_000_000, seq=3,
                             interval_start=1700000000.0, interval=10.0, n=1, final=False,
                             seq_gaps={"receiver-1": 2}, covers={"receiver-1@1700000000000000000": [5, 30, 7, 42]})
AGGREGATES = [{"name": "api.hits", "type": "counter", "tags": {"env": "prod"}, "timestamp": 1700000010,
               "interval": 10, "value": 6.0, "rate": 0.6}]


def golden_frames(name: str, kind: bytes) -> list[bytes]:
    """Split a golden file back into its frames: the kind, then two self-delimiting msgpack objects."""
    data = (GOLDEN / name).read_bytes()
    assert data.startswith(kind)
    rest = data[len(kind):]
    unpacker = msgpack.Unpacker()
    unpacker.feed(rest)
    unpacker.skip()
    cut = unpacker.tell()
    return [kind, rest[:cut], rest[cut:]]


def batch_frames() -> list[bytes]:
    return contract.encode_batch(BATCH_HEADER, SAMPLES)


def test_batch_encodes_to_the_newest_v1_golden_bytes() -> None:
    frames = contract.encode_batch(BATCH_HEADER_2, SAMPLES)
    assert len(frames) == 3
    assert frames[0] == b"pystatsd.batch.v1"
    assert b"".join(frames) == (GOLDEN / "batch.v1.2.bin").read_bytes()


def test_flush_encodes_to_the_newest_v1_golden_bytes() -> None:
    frames = contract.encode_flush(FLUSH_HEADER_1, AGGREGATES)
    assert len(frames) == 3
    assert frames[0] == b"pystatsd.flush.v1"
    assert b"".join(frames) == (GOLDEN / "flush.v1.1.bin").read_bytes()


def test_newest_golden_files_decode_with_the_added_keys() -> None:
    assert contract.decode_batch(golden_frames("batch.v1.2.bin", BATCH_V1)) == (BATCH_HEADER_2, SAMPLES)
    assert contract.decode_batch(golden_frames("batch.v1.1.bin", BATCH_V1)) == (BATCH_HEADER_1, SAMPLES)
    assert contract.decode_flush_header(golden_frames("flush.v1.1.bin", FLUSH_V1)) == FLUSH_HEADER_1


def test_golden_batch_decodes_to_the_message() -> None:
    header, samples = contract.decode_batch(golden_frames("batch.v1.bin", BATCH_V1))
    assert (header, samples) == (BATCH_HEADER, SAMPLES)
    # Before ``metrics`` existed a batch stood for exactly its samples.
    assert header.metrics == header.n == 2


def test_golden_flush_decodes_to_the_message() -> None:
    frames = golden_frames("flush.v1.bin", FLUSH_V1)
    assert contract.decode_flush_header(frames) == FLUSH_HEADER
    assert contract.decode_flush_body(frames) == AGGREGATES


def test_batch_round_trip_gives_hashable_tag_tuples() -> None:
    header, samples = contract.decode_batch(batch_frames())
    assert (header, samples) == (BATCH_HEADER, SAMPLES)
    # The shard keys series by (name, tags): tags must come back as a tuple, not a list.
    assert {(name, tags) for name, _, _, _, tags in samples} == {("api.hits", ("env", "prod")), ("api.users", ())}


def test_flush_round_trip_keeps_final_and_seq_gaps() -> None:
    header = FlushHeader(shard=0, shards=2, epoch=5, seq=9, interval_start=1000.0, interval=0.5, n=0,
                         final=True, seq_gaps={"a": 1, "b": 30})
    frames = contract.encode_flush(header, [])
    assert contract.decode_flush_header(frames) == header
    assert contract.decode_flush_body(frames) == []


def test_unknown_header_keys_are_ignored() -> None:
    # v1 lets a writer add header keys; an older reader must still take the message.
    frames = batch_frames()
    frames[1] = msgpack.packb({**msgpack.unpackb(frames[1]), "zone": "eu-1"})
    assert contract.decode_batch(frames)[0] == BATCH_HEADER


def decode_error(frames: list[bytes]) -> str:
    with pytest.raises(DecodeError) as info:
        contract.decode_batch(frames)
    return info.value.reason


def test_wrong_kind_is_unknown_message() -> None:
    assert decode_error(contract.encode_flush(FLUSH_HEADER, AGGREGATES)) == "unknown_message"


@pytest.mark.parametrize("count", [0, 2, 4])
def test_wrong_frame_count_is_bad_frame_count(count: int) -> None:
    frames = (batch_frames() + [b""])[:count]
    assert decode_error(frames) == "bad_frame_count"


@pytest.mark.parametrize("garbage", [b"\xc1", b"\x92\x01", b"\x01\x02", b""])
def test_garbage_header_is_bad_msgpack(garbage: bytes) -> None:
    # 0xc1 is never used; 0x92 0x01 is a truncated array; 0x01 0x02 has trailing data; b"" is nothing.
    assert decode_error([BATCH_V1, garbage, batch_frames()[2]]) == "bad_msgpack"


def test_garbage_body_is_bad_msgpack() -> None:
    assert decode_error([BATCH_V1, batch_frames()[1], b"\xc1"]) == "bad_msgpack"


def test_header_that_is_not_a_map_is_bad_header() -> None:
    assert decode_error([BATCH_V1, msgpack.packb([1, 2]), batch_frames()[2]]) == "bad_header"


def test_header_missing_a_key_is_bad_header() -> None:
    header = msgpack.unpackb(batch_frames()[1])
    del header["seq"]
    assert decode_error([BATCH_V1, msgpack.packb(header), batch_frames()[2]]) == "bad_header"


@pytest.mark.parametrize(("key", "value"), [("ts", "soon"), ("seq", "7"), ("epoch", None)])
def test_header_with_a_wrongly_typed_key_is_bad_header(key: str, value: object) -> None:
    # A retyped key is a contract break; let through, it crashes the shard in add_batch.
    header = msgpack.unpackb(batch_frames()[1])
    header[key] = value
    assert decode_error([BATCH_V1, msgpack.packb(header), batch_frames()[2]]) == "bad_header"


def test_body_that_is_not_an_array_is_bad_body() -> None:
    assert decode_error([BATCH_V1, batch_frames()[1], msgpack.packb({"a": 1})]) == "bad_body"


def test_flush_body_that_is_not_maps_is_bad_body() -> None:
    frames = contract.encode_flush(FLUSH_HEADER, AGGREGATES)
    frames[2] = msgpack.packb([1])
    with pytest.raises(DecodeError) as info:
        contract.decode_flush_body(frames)
    assert info.value.reason == "bad_body"


def test_oversize_frame_is_refused_before_unpacking(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = batch_frames()
    monkeypatch.setattr(contract, "MAX_FRAME_BYTES", len(frames[1]) - 1)
    assert decode_error(frames) == "frame_too_large"


def test_frame_at_the_size_limit_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = batch_frames()
    monkeypatch.setattr(contract, "MAX_FRAME_BYTES", max(len(frames[1]), len(frames[2])))
    assert contract.decode_batch(frames) == (BATCH_HEADER, SAMPLES)
