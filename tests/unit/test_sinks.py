"""The file sink, the JSON encoder, and the fanout's per-sink retry, bounds and isolation.

Fanout tests run real sink threads; they wait on events the fake sinks set, never on the clock,
and every wait has a timeout so a regression fails instead of hanging.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import msgpack
import pytest

from harness.tmpfs import Filler, small_tmpfs
from harness.wait import wait_for
from stages.common.contract import (
    FLUSH_CHUNK,
    FlushHeader,
    RecordsHeader,
    encode_flush,
    flush_body_chunks,
    records_flush_header,
)
from stages.forwarder import fanout
from stages.forwarder.encoders import make_encoder
from stages.forwarder.fanout import Fanout, SinkRunner
from stages.forwarder.sinks import file as file_sink
from stages.forwarder.sinks import kafka as kafka_sink
from stages.forwarder.sinks.base import (
    BufferConfig,
    Completion,
    EncodedAggregates,
    Flush,
    NamedSink,
    Sink,
    SinkConfig,
    SinkError,
)
from stages.forwarder.sinks.file import FileConfig, FileSink
from stages.forwarder.sinks.kafka import KafkaConfig, KafkaSink, record_id

WAIT_SECS = 5.0


def aggregate(name: str, value: float = 1.0) -> dict[str, Any]:
    return {"name": name, "type": "counter", "tags": {"env": "prod"}, "timestamp": 1010, "interval": 10,
            "value": value, "rate": value / 10}


def make_flush(seq: int, count: int = 1, size: int = 0) -> Flush:
    header = FlushHeader(shard=0, shards=1, epoch=1, seq=seq, interval_start=1000.0, interval=10.0, n=count)
    return Flush(header, [aggregate(f"m{seq}.{i}") for i in range(count)], size)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


class RecordingSink:
    """Records the seq of every flush written; fails the first ``failures`` writes (retriable);
    with ``block`` set, the first write waits for ``release``."""

    name: ClassVar[str] = "recording"
    config_type: ClassVar[type[SinkConfig]] = SinkConfig
    remote: ClassVar[bool] = False

    def __init__(self, failures: int = 0, block: bool = False) -> None:
        self.failures = failures
        self.block = block
        self.opened = 0
        self.attempts = 0
        self.written: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.wrote = threading.Event()

    def open(self) -> None:
        self.opened += 1

    def write(self, flush: Flush) -> None:
        self.attempts += 1
        self.entered.set()
        if self.block and self.attempts == 1:
            assert self.release.wait(WAIT_SECS)
        if self.failures:
            self.failures -= 1
            raise SinkError("destination away", retriable=True)
        self.written.append(flush.header.seq)
        self.wrote.set()

    def close(self) -> None:
        pass


def stop(runner: SinkRunner) -> None:
    runner.request_stop(float("inf"))
    runner.finish(time.monotonic() + WAIT_SECS)


def test_file_sink_appends_one_compact_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "aggregates.jsonl"
    path.write_bytes(b'{"earlier":true}\n')
    sink = FileSink(FileConfig(path=str(path)))
    sink.open()
    sink.write(make_flush(1, count=2))
    sink.write(make_flush(2))
    sink.close()
    assert path.read_bytes().splitlines() == [
        b'{"earlier":true}',
        b'{"name":"m1.0","type":"counter","tags":{"env":"prod"},"timestamp":1010,"interval":10,"value":1.0,"rate":0.1}',
        b'{"name":"m1.1","type":"counter","tags":{"env":"prod"},"timestamp":1010,"interval":10,"value":1.0,"rate":0.1}',
        b'{"name":"m2.0","type":"counter","tags":{"env":"prod"},"timestamp":1010,"interval":10,"value":1.0,"rate":0.1}',
    ]


@pytest.mark.parametrize("rotator_creates_new_file", [False, True])
def test_file_sink_reopens_the_path_after_rotation(tmp_path: Path, rotator_creates_new_file: bool) -> None:
    path = tmp_path / "aggregates.jsonl"
    sink = FileSink(FileConfig(path=str(path)))
    sink.open()
    sink.write(make_flush(1))
    path.rename(tmp_path / "aggregates.jsonl.1")
    if rotator_creates_new_file:  # logrotate's `create`: a new empty file at the path
        path.touch()
    sink.write(make_flush(2))
    sink.close()
    assert [a["name"] for a in lines(tmp_path / "aggregates.jsonl.1")] == ["m1.0"]
    assert [a["name"] for a in lines(path)] == ["m2.0"]


def aggregate_names(path: Path) -> list[str]:
    """The names of the aggregates in a file sink's file, in order; a torn line fails the test."""
    return [a["name"] for a in lines(path)]


@pytest.mark.parametrize("rotated_meanwhile", [False, True])
def test_file_sink_takes_back_a_flush_the_full_disk_cut_and_writes_it_once_when_there_is_room(
        rotated_meanwhile: bool) -> None:
    with small_tmpfs(64 * 1024) as disk:
        path = disk / "aggregates.jsonl"
        sink = FileSink(FileConfig(path=str(path)))
        sink.open()
        sink.write(make_flush(1, count=2))
        filler = Filler(disk / "filler")
        filler.fill()
        filler.give_back(4096)  # room for about 40 of the next flush's 300 lines
        big = make_flush(2, count=300)
        with pytest.raises(SinkError, match="No space left on device") as failed:
            sink.write(big)
        assert failed.value.retriable
        assert aggregate_names(path) == ["m1.0", "m1.1"]  # as it was before the flush, no torn line
        if rotated_meanwhile:
            path.rename(disk / "aggregates.jsonl.1")
        filler.remove()
        sink.write(big)  # the runner's retry: the very same flush
        sink.close()
        names = [f"m2.{i}" for i in range(300)]
        if rotated_meanwhile:
            assert (aggregate_names(disk / "aggregates.jsonl.1"), aggregate_names(path)) == (["m1.0", "m1.1"], names)
        else:
            assert aggregate_names(path) == ["m1.0", "m1.1", *names]


@pytest.mark.parametrize("another_writer", [False, True])
def test_file_sink_takes_back_a_flush_whose_sync_failed_but_never_another_writers_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        another_writer: bool) -> None:
    # An error the file system reports only when it writes the data out (NFS, a thin volume).
    path = tmp_path / "aggregates.jsonl"
    sink = FileSink(FileConfig(path=str(path)))
    sink.write(make_flush(1))

    def failing_sync(fd: int) -> None:
        if another_writer:
            with path.open("ab") as other:
                other.write(b'{"name":"other"}\n')
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as patched:
        patched.setattr(file_sink.os, "fdatasync", failing_sync)
        with pytest.raises(SinkError, match="Input/output error"):
            sink.write(make_flush(2))
    sink.write(make_flush(3))
    sink.close()
    if another_writer:
        assert aggregate_names(path) == ["m1.0", "m2.0", "other", "m3.0"]
        assert "the flush is written again whole" in caplog.text
    else:
        assert aggregate_names(path) == ["m1.0", "m3.0"]


def test_file_sink_creates_its_file_with_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        for name, config in (("default.jsonl", {}), ("shared.jsonl", {"mode": "0640"})):
            sink = FileSink(FileConfig(path=str(tmp_path / name), **config))
            sink.open()
            sink.write(make_flush(1))
            sink.close()
        existing = tmp_path / "existing.jsonl"
        existing.touch(mode=0o644)
        sink = FileSink(FileConfig(path=str(existing)))
        sink.open()
        sink.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "default.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "shared.jsonl").stat().st_mode) == 0o640
    assert stat.S_IMODE(existing.stat().st_mode) == 0o644  # a file the user made keeps its own
    with pytest.raises(ValueError, match="mode: expected an octal mode"):
        FileConfig(path="x", mode="rw-r-----")


def test_file_sink_that_cannot_open_raises_a_retriable_error(tmp_path: Path) -> None:
    sink = FileSink(FileConfig(path=str(tmp_path / "missing-dir" / "aggregates.jsonl")))
    with pytest.raises(SinkError) as info:
        sink.open()
    assert info.value.retriable


def test_json_encoder_is_compact_utf8_and_leaves_the_aggregate_alone() -> None:
    item = {"name": "café", "type": "gauge", "tags": {"city": "Zürich"}, "timestamp": 1010, "interval": 10,
            "value": 2.5}
    before = json.dumps(item)
    assert list(make_encoder("json").encode(item)) == [
        '{"name":"café","type":"gauge","tags":{"city":"Zürich"},"timestamp":1010,"interval":10,"value":2.5}'
        .encode(),
    ]
    assert json.dumps(item) == before


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_encoder_refuses_non_finite_values(value: float) -> None:
    # NaN/Infinity are not JSON; emitting them would break every consumer of the stream.
    with pytest.raises(ValueError):
        list(make_encoder("json").encode(aggregate("bad", value)))


@pytest.mark.parametrize("fmt", ["json", "original", "influx"])
def test_lines_of_a_flush_are_its_records_one_per_line(fmt: str) -> None:
    timer = {"name": "t", "type": "timer", "tags": {"a": "b"}, "timestamp": 1010, "interval": 10,
             "stats": {"count": 2.0, "sum": 3.0, "min": 1.0, "max": 2.0, "mean": 1.5, "median": 1.5,
                       "stddev": 0.5, "p90": 2.0}}
    flush = [aggregate(f"c{i}", float(i)) for i in range(5)] + [timer]
    encoder = make_encoder(fmt)
    records = [record for item in flush for record in encoder.encode(item)]
    assert encoder.lines(flush) == b"".join(record + b"\n" for record in records)
    assert encoder.lines([]) == b""


def test_json_shows_a_timer_s_buckets_and_the_other_formats_write_what_they_did_without_them() -> None:
    timer = {"name": "t", "type": "timer", "tags": {}, "timestamp": 1010, "interval": 10,
             "stats": {"count": 3.0, "sum": 31.5, "min": 0.5, "max": 30.0}}
    bucketed = {**timer, "buckets": {"le": [1.0, 10.0], "counts": [1.0, 2.0, 3.0]}}
    assert make_encoder("json").lines([bucketed]) == (
        b'{"name":"t","type":"timer","tags":{},"timestamp":1010,"interval":10,'
        b'"stats":{"count":3.0,"sum":31.5,"min":0.5,"max":30.0},"buckets":{"le":[1.0,10.0],"counts":[1.0,2.0,3.0]}}\n')
    for fmt in ("original", "influx"):
        assert make_encoder(fmt).lines([bucketed]) == make_encoder(fmt).lines([timer]), fmt


@pytest.mark.parametrize("odd", [{"huge": 2 ** 70}, {"note": "null"}, {"tags": {"k": '},{"name":"forged"'}},
                                 {"interval": 10, "first": "key is not name"}])
def test_json_lines_write_what_the_standard_library_would_where_orjson_cannot(odd: dict[str, Any]) -> None:
    # orjson refuses integers beyond 64 bits, and a "null" in its output may stand for a NaN: both
    # go the record-by-record way, which hands them to the standard library. So do flushes that
    # cannot be cut into lines between objects (a string holding the cut, a record not led by name).
    item = {**odd, **aggregate("odd", 1.0)} if "first" in odd else {**aggregate("odd", 1.0), **odd}
    flush = [aggregate("plain", 2.0), item]
    assert make_encoder("json").lines(flush) == b"".join(
        json.dumps(a, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for a in flush)


def test_json_lines_refuse_non_finite_values_like_a_record_does() -> None:
    with pytest.raises(ValueError):
        make_encoder("json").lines([aggregate("good", 1.0), aggregate("bad", math.nan)])


def test_retriable_failure_is_retried_until_delivered_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "RETRY_FIRST_SECS", 0.01)
    sink = RecordingSink(failures=2)
    runner = SinkRunner(sink, BufferConfig())
    runner.start()
    runner.put(make_flush(1, count=3))
    assert sink.wrote.wait(WAIT_SECS)
    stop(runner)
    assert (sink.written, sink.attempts, sink.opened) == ([1], 3, 1)
    assert (runner.delivered, runner.errors, dict(runner.dropped)) == (3, 2, {})


def test_full_buffer_drops_the_oldest_queued_flush_not_the_one_being_written() -> None:
    sink = RecordingSink(block=True)
    runner = SinkRunner(sink, BufferConfig(buffer_max_aggregates=2))
    runner.start()
    runner.put(make_flush(1))
    assert sink.entered.wait(WAIT_SECS)  # flush 1 is now being written, out of the buffer
    runner.put(make_flush(2, count=2))  # buffer: 2 aggregates, at the bound
    runner.put(make_flush(3))  # 3 > 2: flush 2 (2 aggregates) goes
    runner.put(make_flush(4))  # flushes 3 and 4: 2 aggregates, at the bound
    assert dict(runner.dropped) == {"buffer_full": 2}
    assert runner.pending() == 3  # flush 1 being written + flushes 3 and 4
    sink.release.set()
    stop(runner)
    assert sink.written == [1, 3, 4]
    assert (runner.delivered, dict(runner.dropped)) == (3, {"buffer_full": 2})


def test_buffer_bytes_bound_drops_the_oldest_queued_flushes() -> None:
    sink = RecordingSink()
    runner = SinkRunner(sink, BufferConfig(buffer_max_bytes=100))
    # Not started yet: everything stays queued. 60 + 30 = 90 fits; + 20 = 110 does not, so the
    # 60-byte flush goes and 50 bytes remain.
    runner.put(make_flush(1, count=2, size=60))
    runner.put(make_flush(2, size=30))
    runner.put(make_flush(3, size=20))
    assert dict(runner.dropped) == {"buffer_full": 2}
    runner.start()
    stop(runner)
    assert sink.written == [2, 3]


def entry(sink: Sink, bounds: BufferConfig, name: str | None = None) -> NamedSink:
    """A sink as the forwarder's config gives it: under ``name``, its kind's by default (the original form)."""
    return NamedSink(name or sink.name, sink, bounds)


def test_a_blocked_sink_does_not_delay_another_sink() -> None:
    slow, fast = RecordingSink(block=True), RecordingSink()
    out = Fanout([entry(slow, BufferConfig()), entry(fast, BufferConfig())])
    out.start()
    out.put(make_flush(1))
    assert slow.entered.wait(WAIT_SECS)
    # The slow sink is stuck inside its first write until released; the fast one delivers meanwhile.
    assert fast.wrote.wait(WAIT_SECS)
    assert slow.written == []
    slow.release.set()
    out.stop(WAIT_SECS, 1.0)
    assert (slow.written, fast.written) == ([1], [1])



SINK_TYPES: dict[str, type[RecordingSink]] = {}


def named_sink(sink_name: str, **options: Any) -> RecordingSink:
    """A recording sink registered as ``sink_name``: one class per name, as in the registry."""
    sink_type = SINK_TYPES.setdefault(sink_name, type(f"Sink_{sink_name}", (RecordingSink,), {"name": sink_name}))
    return sink_type(**options)


def test_reconfigure_keeps_an_unchanged_sink_and_drains_a_removed_or_changed_one() -> None:
    kept, removed, old = named_sink("kept"), named_sink("removed", block=True), named_sink("changed")
    out = Fanout([entry(kept, SinkConfig()), entry(removed, SinkConfig()), entry(old, SinkConfig())])
    out.start()
    out.put(make_flush(1))
    assert removed.entered.wait(WAIT_SECS) and old.wrote.wait(WAIT_SECS)  # "removed" is stuck in a write
    new, added = named_sink("changed"), named_sink("added")
    kept_again = named_sink("kept")  # the same name and config: the running one stays, this is not used
    changes = out.reconfigure([entry(kept_again, SinkConfig()), entry(new, SinkConfig(buffer_max_aggregates=5)),
                               entry(added, SinkConfig())], drain_secs=WAIT_SECS)
    assert changes == ["sink changed changed", "sink added added", "sink removed removed"]
    out.put(make_flush(2))
    removed.release.set()  # what the removed sink held is still delivered, after the reload
    out.stop(WAIT_SECS, 1.0)
    assert (kept.written, kept_again.opened) == ([1, 2], 0)
    assert (removed.written, old.written) == ([1], [1])
    assert (new.written, added.written) == ([2], [2])


def test_sinks_stuck_in_a_write_are_abandoned_together_at_one_deadline() -> None:
    stuck = [named_sink(f"stuck{i}", block=True) for i in range(5)]
    out = Fanout([entry(sink, SinkConfig()) for sink in stuck])
    out.start()
    out.put(make_flush(1))
    assert all(sink.entered.wait(WAIT_SECS) for sink in stuck)
    started = time.monotonic()
    out.stop(0.1, 0.5)
    # One shared deadline (0.1 + 0.5 s), not half a second more for each stuck sink (2.6 s).
    assert time.monotonic() - started < 2.0
    assert all(out_runner.dropped["shutdown"] == 1 for out_runner in out.runners)
    for sink in stuck:
        sink.release.set()


def test_sinks_of_one_kind_under_two_names_are_reloaded_each_by_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "RETRY_FIRST_SECS", 0.01)
    archive, audit = named_sink("file"), named_sink("file", failures=10**9)  # audit's folder is not mounted
    out = Fanout([entry(archive, SinkConfig(), "archive"), entry(audit, SinkConfig(), "audit")])
    out.start()
    out.put(make_flush(1, 2))
    out.put(make_flush(2, 3))
    wait_for(lambda: archive.written == [1, 2] and audit.attempts >= 2, WAIT_SECS, "archive to write, audit to retry")
    audit_fixed = named_sink("file")
    changes = out.reconfigure([entry(named_sink("file"), SinkConfig(), "archive"),
                               entry(audit_fixed, SinkConfig(buffer_max_aggregates=50), "audit")], drain_secs=WAIT_SECS)
    assert changes == ["sink audit changed"]
    # archive's runner, sink and buffer run on untouched; audit's successor delivers what it held first.
    assert [runner.name for runner in out.runners] == ["archive", "audit"] and out.runners[0].sink is archive
    out.put(make_flush(3, 4))
    wait_for(lambda: audit_fixed.written == [1, 2, 3], WAIT_SECS, "audit's successor to deliver all three")
    renamed = named_sink("file")
    changes = out.reconfigure([entry(archive, SinkConfig(), "archive"),
                               entry(renamed, SinkConfig(buffer_max_aggregates=50), "audit2")], drain_secs=WAIT_SECS)
    assert changes == ["sink audit2 added", "sink audit removed"]  # a rename: one removed, another added
    out.put(make_flush(4, 5))
    wait_for(lambda: renamed.written == [4], WAIT_SECS, "the renamed sink to write what comes after")
    out.stop(WAIT_SECS, 1.0)
    assert (archive.written, audit.written, audit_fixed.written) == ([1, 2, 3, 4], [], [1, 2, 3])
    rows = out.figures()
    assert {name: (row["delivered"], row["removed"]) for name, row in rows.items()} == {
        "archive": (14, False), "audit2": (5, False), "audit": (9, True)}


def test_a_name_that_holds_another_kind_after_a_reload_drains_the_old_sink_as_a_removed_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # debug_mode turned on by a reload: the console stand-in takes kafka's name, not what kafka held.
    monkeypatch.setattr(fanout, "RETRY_FIRST_SECS", 0.01)
    kafka = named_sink("kafka", failures=10**9)  # its broker is away
    out = Fanout([entry(kafka, SinkConfig())])
    out.start()
    out.put(make_flush(1, 2))
    wait_for(lambda: kafka.attempts >= 1, WAIT_SECS, "kafka to try the flush")
    stand_in = named_sink("console")
    changes = out.reconfigure([entry(stand_in, SinkConfig(), "kafka")], drain_secs=0.3)
    assert changes == ["sink kafka is of another kind: the old one drains, the new one starts empty"]
    out.put(make_flush(2, 3))
    wait_for(lambda: stand_in.written == [2], WAIT_SECS, "the stand-in to print what came after")
    wait_for(lambda: (out.finish_retired(), out.retiring == [])[1], WAIT_SECS, "kafka's drain to end")
    out.stop(WAIT_SECS, 1.0)
    # One row under the name: the stand-in's delivery and what kafka could not deliver in its drain.
    row = out.figures()["kafka"]
    assert (row["delivered"], row["dropped"], row["removed"]) == (3, {"removed": 2}, False)


def tracked_flush(seq: int, count: int, sinks: int, done: list[int]) -> Flush:
    """A flush that appends its seq to ``done`` once ``sinks`` sinks are done with it (what the ledger records)."""
    flush = make_flush(seq, count)
    return Flush(flush.header, flush.aggregates, flush.size, Completion(sinks, lambda: done.append(seq)))


def test_a_changed_sink_hands_what_it_holds_to_its_successor_which_delivers_it_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "RETRY_FIRST_SECS", 0.01)
    old = named_sink("influx", failures=10**9)  # a typo in its URL: every write fails
    out = Fanout([entry(old, SinkConfig())])
    out.start()
    done: list[int] = []
    for seq in (1, 2, 3):
        out.put(tracked_flush(seq, seq, 1, done))
    wait_for(lambda: old.attempts >= 2, WAIT_SECS, "the old sink retrying its first flush")
    new = named_sink("influx")  # the URL fixed
    out.reconfigure([entry(new, SinkConfig(buffer_max_aggregates=100))], drain_secs=WAIT_SECS)
    out.put(tracked_flush(4, 4, 1, done))
    wait_for(lambda: len(new.written) == 4, WAIT_SECS, "the new sink delivering all four flushes")
    out.stop(WAIT_SECS, 1.0)
    # The retried flush and the queue first, in order, then what came after the reload; once each.
    assert (new.written, old.written) == ([1, 2, 3, 4], [])
    assert done == [1, 2, 3, 4]
    assert out.figures()["influx"] | {"errors": 0} == {"delivered": 10, "waiting": 0, "dropped": {}, "errors": 0,
                                                     "failing": None, "removed": False}


def test_a_removed_sink_gets_its_drain_then_what_is_left_is_counted_as_dropped_removed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "RETRY_FIRST_SECS", 0.01)
    kept, kafka = named_sink("kept"), named_sink("kafka", failures=10**9)  # its broker is unreachable
    out = Fanout([entry(kept, SinkConfig()), entry(kafka, SinkConfig())])
    out.start()
    done: list[int] = []
    for seq in (1, 2):
        out.put(tracked_flush(seq, seq + 1, 2, done))
    wait_for(lambda: kafka.attempts >= 1 and kept.written == [1, 2], WAIT_SECS, "both sinks to take the flushes")
    started = time.monotonic()
    changes = out.reconfigure([entry(named_sink("kept"), SinkConfig())], drain_secs=0.3)
    assert changes == ["sink kafka removed"]
    assert time.monotonic() - started < 0.2  # the drain is the removed sink's thread's, not the loop's
    out.put(tracked_flush(3, 1, 1, done))
    wait_for(lambda: (out.finish_retired(), out.retiring == [])[1], WAIT_SECS, "the removed sink's drain to end")
    attempts = kafka.attempts
    # Each flush done once for every sink: the ledger records it (a copy dropped here is not lost elsewhere).
    assert sorted(done) == [1, 2, 3] and kept.written == [1, 2, 3]
    assert out.figures()["kafka"] | {"errors": 0} == {"delivered": 0, "waiting": 0, "dropped": {"removed": 5},
                                                    "errors": 0, "failing": None, "removed": True}
    out.stop(WAIT_SECS, 1.0)
    assert kafka.attempts == attempts  # released: never tried again


def test_a_sink_removed_then_added_again_carries_its_totals_on() -> None:
    first = named_sink("file")
    out = Fanout([entry(first, SinkConfig())])
    out.start()
    out.put(make_flush(1, 2))
    assert first.wrote.wait(WAIT_SECS)
    out.reconfigure([], drain_secs=WAIT_SECS)
    wait_for(lambda: (out.finish_retired(), "file" in out.removed)[1], WAIT_SECS, "the removed sink's release")
    again = named_sink("file")
    out.reconfigure([entry(again, SinkConfig())], drain_secs=WAIT_SECS)
    out.put(make_flush(2, 3))
    assert again.wrote.wait(WAIT_SECS)
    out.stop(WAIT_SECS, 1.0)
    # One row, whose delivered total never goes back (a self-metric's increase is never negative).
    assert (out.figures()["file"]["delivered"], out.figures()["file"]["removed"]) == (5, False)


def encoded_flush(seq: int, body: bytes, count: int) -> Flush:
    """A flush as the forwarder takes it off the wire: its aggregates still encoded."""
    header = FlushHeader(shard=0, shards=1, epoch=1, seq=seq, interval_start=0.0, interval=10.0, n=count)
    frames = [b"pystatsd.flush.v1", b"", body]
    return Flush(header, EncodedAggregates(count, functools.partial(flush_body_chunks, frames)), len(body))


def test_a_flush_off_the_wire_is_decoded_a_chunk_at_a_time_as_its_sink_writes_it(tmp_path: Path) -> None:
    aggregates = [aggregate(f"m.{i}", float(i)) for i in range(FLUSH_CHUNK * 2 + 3)]
    body = encode_flush(make_flush(0).header, aggregates)[2]
    flush = encoded_flush(0, body, len(aggregates))
    assert [len(chunk) for chunk in flush.chunks()] == [FLUSH_CHUNK, FLUSH_CHUNK, 3]
    sink = FileSink(FileConfig(path=str(tmp_path / "out.jsonl")))
    sink.write(flush)
    sink.close()
    assert lines(tmp_path / "out.jsonl") == aggregates


def test_a_flush_whose_body_is_not_aggregates_is_dropped_as_rejected_and_the_next_delivered(tmp_path: Path) -> None:
    runner = SinkRunner(FileSink(FileConfig(path=str(tmp_path / "out.jsonl"))), BufferConfig())
    runner.start()
    runner.put(encoded_flush(0, msgpack.packb([1, 2]), 2))
    runner.put(make_flush(1))
    wait_for(lambda: runner.delivered == 1, 5, "the good flush written")
    assert runner.dropped == {"rejected": 2}
    runner.request_stop(time.monotonic())
    runner.finish(time.monotonic() + 1)
    assert lines(tmp_path / "out.jsonl") == make_flush(1).aggregates


def test_kafka_gives_each_record_an_id_of_its_own_and_a_resent_one_the_same() -> None:
    event = {"name": "deploy", "type": "event", "tags": {}, "timestamp": 1700000000, "text": "v2", "hostname": "",
             "aggregation_key": "", "priority": "normal", "source_type_name": "", "alert_type": "info"}
    sink = KafkaSink(KafkaConfig(kafka_broker="127.0.0.1:9", kafka_topic="t", format="json"))
    header = records_flush_header(RecordsHeader(src="receiver", epoch=5, seq=3, n=2), 2, 10.0, 1700000001.0)
    # Two alike events: an aggregate's id (series and interval) would make a consumer keep one of them.
    records = sink._encode(Flush(header, [event, dict(event)], 0))
    assert [(r.key, r.id) for r in records] == [(b"deploy", b"records@5.3/0"), (b"deploy", b"records@5.3/1")]
    assert [r.id for r in sink._encode(Flush(header, [event, dict(event)], 0))] == [r.id for r in records]
    assert record_id(event, 0, 1) == record_id(dict(event), 0, 1)


def test_a_body_found_bad_part_way_leaves_no_line_of_its_flush_in_the_file(tmp_path: Path) -> None:
    # The file sink writes each chunk as it is encoded: the chunks written before the bad one are taken back.
    good = [aggregate(f"m.{i}") for i in range(FLUSH_CHUNK + 1)]
    body = msgpack.packb([*good[:-1], 7])  # the last aggregate, in the second chunk, is no map
    runner = SinkRunner(FileSink(FileConfig(path=str(tmp_path / "out.jsonl"))), BufferConfig())
    runner.start()
    runner.put(encoded_flush(0, body, len(good)))
    runner.put(make_flush(1))
    wait_for(lambda: runner.delivered == 1, 5, "the good flush written")
    assert runner.dropped == {"rejected": len(good)}
    runner.request_stop(time.monotonic())
    runner.finish(time.monotonic() + 1)
    assert lines(tmp_path / "out.jsonl") == make_flush(1).aggregates


class FlakyProducer:
    """kafka-python's producer standing in for a broker that fails the record it is told to, once."""

    class Future:
        def __init__(self, ok: bool) -> None:
            self.ok = ok
            self.exception = None if ok else RuntimeError("broker away")

        def succeeded(self) -> bool:
            return self.ok

        def failed(self) -> bool:
            return not self.ok

    def __init__(self, fail_at: int) -> None:
        self.sent: list[bytes] = []
        self.fail_at = fail_at

    def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Future:
        ok = len(self.sent) != self.fail_at
        self.sent.append(value)
        return self.Future(ok)

    def flush(self, timeout: float | None = None) -> None:
        pass


# kafka-python reads its own files with the deprecated importlib.resources calls when first imported.
@pytest.mark.filterwarnings(r"ignore:(read|open)_text is deprecated:DeprecationWarning")
def test_kafka_resumes_a_chunked_flush_at_the_record_that_failed_encoding_none_again(tmp_path: Path) -> None:
    aggregates = [aggregate(f"m.{i}", float(i)) for i in range(kafka_sink.CHUNK_AGGREGATES * 2 + 5)]
    flush = encoded_flush(0, encode_flush(make_flush(0).header, aggregates)[2], len(aggregates))
    sink = KafkaSink(KafkaConfig(kafka_broker="127.0.0.1:9", kafka_topic="t", format="json"))
    failing = kafka_sink.CHUNK_AGGREGATES + 10  # in the second chunk
    sink.producer = producer = FlakyProducer(failing)
    encoded: list[int] = []
    encode = sink._encode_chunk

    def counted(flush: Flush, chunk: list[dict[str, Any]], first: int) -> list[Any]:
        encoded.append(first)
        return encode(flush, chunk, first)

    sink.progress._encode = counted
    with pytest.raises(SinkError):
        sink.write(flush)
    # The second chunk's records were all sent (the producer is asked for all, then waited for), one failed.
    assert len(producer.sent) == 2 * kafka_sink.CHUNK_AGGREGATES
    producer.fail_at = -1
    sink.write(flush)
    values = [json.loads(value)["name"] for value in producer.sent]
    # Only the failed record again (those after it were delivered), then the third chunk; each chunk encoded once.
    assert values == ([a["name"] for a in aggregates[:2 * kafka_sink.CHUNK_AGGREGATES]] + [f"m.{failing}"]
                      + [a["name"] for a in aggregates[2 * kafka_sink.CHUNK_AGGREGATES:]])
    assert encoded == [0, kafka_sink.CHUNK_AGGREGATES, 2 * kafka_sink.CHUNK_AGGREGATES]
