"""The wire contract: round trips, golden bytes, and the DecodeError reason for each malformed message.

tests/data/contract/partial.v1.bin is one ``pystatsd.partial.v1`` record value, written when it was
fixed. tests/data/contract/{batch,flush}.v1.bin are the three frames of BATCH/FLUSH below, concatenated,
written once when v1 was fixed; batch.v2.bin likewise when the columnar batch v2 was fixed. Within a
version header keys may only be added: each addition gets golden files of its own
({batch,flush}.v1.1.bin: ``sent_before`` and ``covers``; batch.v1.2.bin: ``metrics``; batch.v2.1.bin:
``paused``; batch.v2.2.bin: ``gauge_ttls``, left out when empty; flush.v1.2.bin: ``ack``, ``revision``
and the fourth frame of partials; batch.v2.3.bin: ``entry_metrics``, left out when empty; flush.v1.3.bin:
``paused``, and flush.v1.3.paused.bin, a shard's empty flush before it holds the rest for a
restarting forwarder; flush.v1.4.bin: a timer's aggregate with ``buckets``, which a reader that does not
know them ignores; records.v1.bin: a receiver's events and service checks), writers produce
the newest, and readers keep decoding every older file, the added keys taking their defaults. Any
other change to the bytes for the same message is a wire-format change (a new major version). Batch
v1 is still read (one release after v2), as a v2 body of one entry per sample.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgpack
import pytest

from stages.common import contract
from stages.common.contract import BATCH_V1, BATCH_V2, FLUSH_V1, BatchBody, BatchHeader, DecodeError, FlushHeader

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "contract"

BATCH_HEADER = BatchHeader(src="receiver-1", epoch=1_700_000_000_000_000_000, seq=7, ts=1700000000.5, n=2)
SAMPLES = [("api.hits", 1, 3.0, 0.5, ("env", "prod")), ("api.users", 7, "u42", 1.0, ())]
#: What SAMPLES become when read from a v1 batch: one v2 entry per sample.
SAMPLES_AS_BODY = BatchBody(["api.hits\x1fenv\x1fprod", 6.0], [], [], ["api.users", ["u42"]], [])
#: A v2 batch of every section: 9 metrics in 6 entries.
BATCH_HEADER_V2 = BatchHeader(src="receiver-1", epoch=1_700_000_000_000_000_000, seq=7, ts=1700000000.5, n=6,
                              sent_before=40, metrics=9)
BODY_V2 = BatchBody(
    counters=["api.hits\x1fenv\x1fprod", 6.0],
    gauges=["queue.depth", True, 12.0, "pool.free\x1fdb\x1fmain", False, -2.5],
    sampled=["api.latency\x1fenv\x1fprod", 4, 3.0, contract.pack_values([37.8, 12.25, 1000.0])],
    sets=["api.users", ["u42", "u7"]],
    traces=["checkout", 1.0],
)
#: v2.2: the ttls a rule gave two of its gauges.
BATCH_HEADER_V2_2 = dataclasses.replace(BATCH_HEADER_V2, gauge_ttls={"queue.depth": 300.0,
                                                                     "pool.free\x1fdb\x1fmain": 0.25})
#: v2.3: each entry's metrics in body order (the counter 1, the gauges 1 and 1, the timer 3, the set 2, the
#: trace 1: the 9 of ``metrics``).
ENTRY_METRICS = [1, 1, 1, 3, 2, 1]
BATCH_HEADER_V2_3 = dataclasses.replace(BATCH_HEADER_V2, entry_metrics=contract.pack_entry_metrics(ENTRY_METRICS))
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
FLUSH_HEADER_2 = FlushHeader(shard=1, shards=4, epoch=1_700_000_000_000_000_000, seq=3,
                             interval_start=1700000000.0, interval=10.0, n=1, final=False,
                             seq_gaps={"receiver-1": 2}, covers={"receiver-1@1700000000000000000": [5, 30, 7, 42]},
                             ack=True, revision=2)
FLUSH_HEADER_3 = FlushHeader(shard=1, shards=4, epoch=1_700_000_000_000_000_000, seq=4, interval_start=0.0,
                             interval=10.0, n=0, paused=True)
PARTIAL_HEADER = contract.PartialHeader(host="web-1", src="1@1700000000000000000", interval_start=1700000000.0,
                                        interval=10.0, stats=[2000.0, 4000.0, 0.5, 9.5, 10000.0], sketch=b"\x01\x02")
PARTIAL_BODY = BatchBody([], [], ["api.latency\x1fenv\x1fprod", 4, 2000.0, b""], [], [])
AGGREGATES = [{"name": "api.hits", "type": "counter", "tags": {"env": "prod"}, "timestamp": 1700000010,
               "interval": 10, "value": 6.0, "rate": 0.6}]


#: v1.4: a timer's aggregate with the buckets ``histogram_buckets`` gave it (cumulative, le, +Inf last).
BUCKETED = {"name": "api.latency", "type": "timer", "tags": {"env": "prod"}, "timestamp": 1700000010, "interval": 10,
            "stats": {"count": 4.0, "sum": 6.5, "min": 0.5, "max": 3.0, "mean": 1.625, "median": 1.5,
                      "stddev": 0.893, "p90": 3.0},
            "buckets": {"le": [0.5, 1.0, 2.5], "counts": [1.0, 1.0, 3.0, 4.0]}}


def golden_frames(name: str, kind: bytes) -> list[bytes]:
    """Split a golden file back into its frames: the kind, then self-delimiting msgpack objects."""
    data = (GOLDEN / name).read_bytes()
    assert data.startswith(kind)
    rest = data[len(kind):]
    unpacker = msgpack.Unpacker()
    unpacker.feed(rest)
    frames, cut = [kind], 0
    while cut < len(rest):
        unpacker.skip()
        frames.append(rest[cut:unpacker.tell()])
        cut = unpacker.tell()
    return frames


def decoded(frames: list[bytes]) -> tuple[BatchHeader, BatchBody]:
    """What a shard reads of a batch: the header, and the body its merge checks and unpacks."""
    header, body = contract.decode_batch(frames)
    return header, contract.decode_batch_body(body)


def batch_frames() -> list[bytes]:
    return contract.encode_batch(BATCH_HEADER_V2, contract.pack_batch_body(BODY_V2))


def test_batch_encodes_to_the_newest_v2_golden_bytes() -> None:
    frames = batch_frames()
    assert len(frames) == 3
    assert frames[0] == b"pystatsd.batch.v2"
    assert b"".join(frames) == (GOLDEN / "batch.v2.1.bin").read_bytes()


def test_golden_v2_batches_decode_to_the_message() -> None:
    for name in ("batch.v2.1.bin", "batch.v2.bin"):
        header, body = decoded(golden_frames(name, BATCH_V2))
        assert (header, body) == (BATCH_HEADER_V2, BODY_V2)
        assert header.paused is False
        assert list(contract.unpack_values(body.sampled[3])) == [37.8, 12.25, 1000.0]


def test_a_batch_with_gauge_ttls_encodes_to_the_v2_2_golden_and_decodes_back() -> None:
    frames = contract.encode_batch(BATCH_HEADER_V2_2, contract.pack_batch_body(BODY_V2))
    assert b"".join(frames) == (GOLDEN / "batch.v2.2.bin").read_bytes()
    assert decoded(golden_frames("batch.v2.2.bin", BATCH_V2)) == (BATCH_HEADER_V2_2, BODY_V2)


def test_a_shard_of_v2_1_reads_a_v2_2_batch_as_one_without_ttls(monkeypatch: pytest.MonkeyPatch) -> None:
    # A reader takes the header keys it knows: one that does not know gauge_ttls ignores them (its
    # gauges then expire as every gauge does), and a batch without the key is one of no ttl.
    fields = dict(contract._FIELD_TYPES[BatchHeader])
    del fields["gauge_ttls"]
    monkeypatch.setitem(contract._FIELD_TYPES, BatchHeader, fields)
    assert decoded(golden_frames("batch.v2.2.bin", BATCH_V2)) == (BATCH_HEADER_V2, BODY_V2)
    monkeypatch.undo()
    assert decoded(golden_frames("batch.v2.1.bin", BATCH_V2))[0].gauge_ttls == {}


@pytest.mark.parametrize("ttls", [{"g": 0}, {"g": -1.0}, {"g": float("inf")}, {"g": True}, {"g": "30"},
                                  [1, 2]])
def test_gauge_ttls_that_are_no_positive_seconds_per_key_are_bad_header(ttls: object) -> None:
    header = msgpack.unpackb(batch_frames()[1])
    header["gauge_ttls"] = ttls
    assert decode_error([BATCH_V2, msgpack.packb(header), batch_frames()[2]]) == "bad_header"


def test_a_batch_with_entry_metrics_encodes_to_the_v2_3_golden_and_decodes_back() -> None:
    frames = contract.encode_batch(BATCH_HEADER_V2_3, contract.pack_batch_body(BODY_V2))
    assert b"".join(frames) == (GOLDEN / "batch.v2.3.bin").read_bytes()
    header, body = decoded(golden_frames("batch.v2.3.bin", BATCH_V2))
    assert (header, body) == (BATCH_HEADER_V2_3, BODY_V2)
    assert list(contract.unpack_entry_metrics(header.entry_metrics)) == ENTRY_METRICS
    assert header.entry_metrics[:4] == b"\x01\x00\x00\x00"  # little-endian, whatever the machine
    assert decoded(golden_frames("batch.v2.2.bin", BATCH_V2))[0].entry_metrics == b""


def test_a_shard_of_v2_2_reads_a_v2_3_batch_as_one_without_entry_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = dict(contract._FIELD_TYPES[BatchHeader])
    del fields["entry_metrics"]
    monkeypatch.setitem(contract._FIELD_TYPES, BatchHeader, fields)
    assert decoded(golden_frames("batch.v2.3.bin", BATCH_V2)) == (BATCH_HEADER_V2, BODY_V2)


@pytest.mark.parametrize("entry_metrics", [b"\x01\x00\x00\x00", b"\x00" * 25, [1, 1, 1, 3, 2, 1], "abc"])
def test_entry_metrics_that_are_not_one_count_per_entry_are_bad_header(entry_metrics: object) -> None:
    header = msgpack.unpackb(batch_frames()[1])
    header["entry_metrics"] = entry_metrics
    assert decode_error([BATCH_V2, msgpack.packb(header, use_bin_type=True), batch_frames()[2]]) == "bad_header"


def test_a_paused_batch_round_trips() -> None:
    header = BatchHeader(src="receiver", epoch=1, seq=4, ts=1.5, n=0, sent_before=12, metrics=0, paused=True)
    frames = contract.encode_batch(header, contract.pack_batch_body(BatchBody.empty()))
    assert decoded(frames) == (header, BatchBody.empty())


def test_timer_values_are_little_endian_float64() -> None:
    assert contract.pack_values([1.0, -2.5]) == bytes.fromhex("000000000000f03f00000000000004c0")


def test_flush_encodes_to_the_newest_v1_golden_bytes() -> None:
    frames = contract.encode_flush(FLUSH_HEADER_2, AGGREGATES, [b"api.hits", b"partial"])
    assert len(frames) == 4
    assert frames[0] == b"pystatsd.flush.v1"
    assert b"".join(frames) == (GOLDEN / "flush.v1.3.bin").read_bytes()
    assert contract.decode_flush_partials(frames) == [b"api.hits", b"partial"]
    assert contract.decode_flush_partials(frames[:3]) == []


def test_a_flush_with_buckets_encodes_to_the_v1_4_golden_and_an_older_reader_ignores_them() -> None:
    frames = contract.encode_flush(FLUSH_HEADER_2, [*AGGREGATES, BUCKETED])
    assert b"".join(frames) == (GOLDEN / "flush.v1.4.bin").read_bytes()
    golden = golden_frames("flush.v1.4.bin", FLUSH_V1)
    assert contract.decode_flush_header(golden) == FLUSH_HEADER_2
    assert [a for chunk in contract.flush_body_chunks(golden) for a in chunk] == [*AGGREGATES, BUCKETED]
    # A reader of v1.3 takes the keys it knows: without ``buckets`` the aggregate is the one it always read.
    assert {k: v for k, v in contract.decode_flush_body(golden)[1].items() if k != "buckets"} == {
        k: v for k, v in BUCKETED.items() if k != "buckets"}
    # ... and an older flush has none: no aggregate of it has buckets.
    assert not any("buckets" in a for a in contract.decode_flush_body(golden_frames("flush.v1.3.bin", FLUSH_V1)))


def test_a_paused_flush_encodes_to_the_newest_v1_golden_bytes() -> None:
    frames = contract.encode_flush(FLUSH_HEADER_3, [])
    assert b"".join(frames) == (GOLDEN / "flush.v1.3.paused.bin").read_bytes()
    assert contract.decode_flush_header(golden_frames("flush.v1.3.paused.bin", FLUSH_V1)) == FLUSH_HEADER_3
    assert contract.flush_body_count(frames) == 0


def test_a_partial_encodes_to_its_golden_bytes_and_decodes_back() -> None:
    value = contract.encode_partial(PARTIAL_HEADER, PARTIAL_BODY)
    assert value == (GOLDEN / "partial.v1.bin").read_bytes()
    assert contract.decode_partial(value) == (PARTIAL_HEADER, PARTIAL_BODY)


def test_v1_golden_files_decode_with_the_added_keys() -> None:
    assert contract.decode_flush_header(golden_frames("flush.v1.2.bin", FLUSH_V1)) == FLUSH_HEADER_2
    assert not contract.decode_flush_header(golden_frames("flush.v1.2.bin", FLUSH_V1)).paused
    assert decoded(golden_frames("batch.v1.2.bin", BATCH_V1)) == (BATCH_HEADER_2, SAMPLES_AS_BODY)
    assert decoded(golden_frames("batch.v1.1.bin", BATCH_V1)) == (BATCH_HEADER_1, SAMPLES_AS_BODY)
    assert contract.decode_flush_header(golden_frames("flush.v1.1.bin", FLUSH_V1)) == FLUSH_HEADER_1


def test_golden_v1_batch_decodes_to_one_entry_per_sample() -> None:
    header, body = decoded(golden_frames("batch.v1.bin", BATCH_V1))
    assert (header, body) == (BATCH_HEADER, SAMPLES_AS_BODY)
    # Before ``metrics`` existed a batch stood for exactly its samples.
    assert header.metrics == header.n == 2


def test_every_v1_sample_type_becomes_its_v2_entry() -> None:
    samples = [["g", 2, 5.0, 1.0, []], ["g", 3, -1.0, 1.0, []], ["t", 4, 7.5, 0.25, ["k", "v"]],
               ["h", 5, 1.0, 1.0, []], ["tr", 8, 1.0, 0.5, []]]
    frames = [BATCH_V1, msgpack.packb({"src": "r", "epoch": 1, "seq": 0, "ts": 1.0, "n": 5}), msgpack.packb(samples)]
    _, body = decoded(frames)
    sampled = ["t\x1fk\x1fv", 4, 4.0, contract.pack_values([7.5]), "h", 5, 1.0, contract.pack_values([1.0])]
    assert body == BatchBody([], ["g", True, 5.0, "g", False, -1.0], sampled, [], ["tr", 2.0])


def test_golden_flush_decodes_to_the_message() -> None:
    frames = golden_frames("flush.v1.bin", FLUSH_V1)
    assert contract.decode_flush_header(frames) == FLUSH_HEADER
    assert contract.decode_flush_body(frames) == AGGREGATES


def test_batch_round_trip() -> None:
    assert decoded(batch_frames()) == (BATCH_HEADER_V2, BODY_V2)


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
    assert contract.decode_batch(frames)[0] == BATCH_HEADER_V2


def decode_error(frames: list[bytes]) -> str:
    with pytest.raises(DecodeError) as info:
        decoded(frames)
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
    assert decode_error([BATCH_V2, garbage, batch_frames()[2]]) == "bad_msgpack"


def test_garbage_body_is_bad_msgpack() -> None:
    assert decode_error([BATCH_V2, batch_frames()[1], b"\xc1"]) == "bad_msgpack"


def test_header_that_is_not_a_map_is_bad_header() -> None:
    assert decode_error([BATCH_V2, msgpack.packb([1, 2]), batch_frames()[2]]) == "bad_header"


def test_header_missing_a_key_is_bad_header() -> None:
    header = msgpack.unpackb(batch_frames()[1])
    del header["seq"]
    assert decode_error([BATCH_V2, msgpack.packb(header), batch_frames()[2]]) == "bad_header"


@pytest.mark.parametrize(("key", "value"), [("ts", "soon"), ("seq", "7"), ("epoch", None)])
def test_header_with_a_wrongly_typed_key_is_bad_header(key: str, value: object) -> None:
    # A retyped key is a contract break; let through, it crashes the shard in add_batch.
    header = msgpack.unpackb(batch_frames()[1])
    header[key] = value
    assert decode_error([BATCH_V2, msgpack.packb(header), batch_frames()[2]]) == "bad_header"


@pytest.mark.parametrize("body", [{"a": 1}, [[], [], [], []], [["k"], [], [], [], []], [[], ["k", True], [], [], []],
                                  [[], [], [], [], 5]])
def test_body_that_is_not_five_sections_of_whole_entries_is_bad_body(body: object) -> None:
    assert decode_error([BATCH_V2, batch_frames()[1], msgpack.packb(body)]) == "bad_body"


def test_v1_body_that_is_not_samples_is_bad_body() -> None:
    header = golden_frames("batch.v1.bin", BATCH_V1)[1]
    assert decode_error([BATCH_V1, header, msgpack.packb({"a": 1})]) == "bad_body"
    assert decode_error([BATCH_V1, header, msgpack.packb([["a", 1, "x", 1.0, []]])]) == "bad_body"


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
    assert decoded(frames) == (BATCH_HEADER_V2, BODY_V2)


RECORDS_HEADER = contract.RecordsHeader(src="receiver-1", epoch=1_700_000_000_000_000_000, seq=2, n=2)
RECORDS = [
    {"name": "deploy", "type": "event", "tags": {"env": "prod"}, "timestamp": 1700000001, "text": "v2\nout",
     "hostname": "web-1", "aggregation_key": "", "priority": "normal", "source_type_name": "", "alert_type": "info"},
    {"name": "db.ok", "type": "service_check", "tags": {}, "timestamp": 1700000002, "status": 2,
     "status_name": "critical", "hostname": "", "message": "down: disk | full"},
]


def test_records_encode_to_their_golden_bytes_and_decode_back() -> None:
    frames = contract.encode_records(RECORDS_HEADER, RECORDS)
    assert b"".join(frames) == (GOLDEN / "records.v1.bin").read_bytes()
    assert contract.decode_records(golden_frames("records.v1.bin", contract.RECORDS_V1)) == (RECORDS_HEADER, RECORDS)


@pytest.mark.parametrize("records", [
    {"a": 1}, RECORDS[:1], [{**RECORDS[0], "type": "metric"}, RECORDS[1]],
    [{**RECORDS[0], "tags": {"k": 1}}, RECORDS[1]],
    [{**RECORDS[0], "timestamp": None}, RECORDS[1]], [{**RECORDS[0], "timestamp": True}, RECORDS[1]],
    [RECORDS[0], {k: v for k, v in RECORDS[1].items() if k != "name"}], [RECORDS[0], 5],
])
def test_records_that_are_not_n_records_are_bad_body(records: object) -> None:
    frames = contract.encode_records(RECORDS_HEADER, RECORDS)
    frames[2] = msgpack.packb(records)
    with pytest.raises(DecodeError) as info:
        contract.decode_records(frames)
    assert info.value.reason == "bad_body"


def test_records_are_no_flush_and_a_flush_no_records() -> None:
    records = contract.encode_records(RECORDS_HEADER, RECORDS)
    with pytest.raises(DecodeError) as info:
        contract.decode_flush_header(records)
    assert info.value.reason == "unknown_message"  # what a forwarder older than records makes of them
    with pytest.raises(DecodeError) as info:
        contract.decode_records(contract.encode_flush(FLUSH_HEADER, AGGREGATES))
    assert info.value.reason == "unknown_message"


@pytest.mark.parametrize("count", [0, 1, 16, contract.FLUSH_CHUNK * 2 + 1])
def test_a_body_packed_as_its_aggregates_come_reads_as_the_list_packed_whole(count: int) -> None:
    aggregates = [{**AGGREGATES[0], "name": f"api.hits.{i}"} for i in range(count)]
    packer = contract.FlushBodyPacker()
    packer.add(iter(aggregates[:count // 2]))
    packer.add(iter(aggregates[count // 2:]))
    frames = contract.encode_flush(dataclasses.replace(FLUSH_HEADER, n=packer.count), packer.body())
    assert packer.count == count == contract.flush_body_count(frames)
    assert contract.decode_flush_body(frames) == aggregates
    assert [a for chunk in contract.flush_body_chunks(frames) for a in chunk] == aggregates
