"""The forwarder's loop in-process: its real PULL socket in a temporary run directory, a PUSH per shard
playing that shard (contract.encode_flush), sinks that keep what they get, and a clock the test moves.

What a whole pipeline proved before, one stage at a time here: each flush reaches every sink; a gap in
a shard's flush sequence is counted; the ledger records coverage and counts what a crashed forwarder
held; its own figures flush at the interval's edge; a stop for a restart pauses the shards and a stop
of the pipeline waits for their finals; a reload swaps the sinks from the next flush.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import zmq

from harness.wait import wait_for
from stages.common import contract
from stages.common.config import load_config
from stages.common.contract import FlushHeader
from stages.common.lifecycle import FORWARDER_STOP
from stages.common.process_names import FORWARDER, process_name
from stages.common.sharding import forwarder_endpoint
from stages.forwarder import forwarder_loop
from stages.forwarder.fanout import Fanout
from stages.forwarder.forwarder_loop import Forwarder
from stages.forwarder.sinks import build_sinks
from stages.forwarder.sinks.base import BaseSink, BufferConfig, Flush, NamedSink, Sink, SinkConfig, SinkError
from stages.rundir.figures import read_all
from stages.rundir.pause import forwarder_pause_path, read_pause
from tests.fake_clock import FakeClock

INTERVAL = 10.0
#: An interval's edge: the fake clock starts here.
START = 1_700_000_000.0
SHARDS = 2
Ctx = zmq.Context[zmq.Socket[bytes]]


class MemorySink(BaseSink[SinkConfig], name="memory", config_type=SinkConfig, remote=False):
    """Keeps each flush's header and aggregates; holds every write while ``gate`` is clear (a stuck sink),
    fails it while ``down`` (its destination away: retried, as Kafka's)."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        self.got: list[tuple[FlushHeader, list[dict[str, Any]]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.down = False

    def write(self, flush: Flush) -> None:
        self.gate.wait()
        if self.down:
            raise SinkError("unreachable")
        self.got.append((flush.header, flush.aggregates))

    def names(self) -> list[str]:
        return [a["name"] for _, aggregates in self.got for a in aggregates]


def aggregates(*names: str, stamp: float = START) -> list[dict[str, Any]]:
    return [{"name": name, "type": "counter", "value": 1.0, "rate": 0.1, "tags": {}, "timestamp": stamp,
             "interval": INTERVAL} for name in names]


def flush(shard: int, seq: int, *names: str, epoch: int = 7, **fields: Any) -> list[bytes]:
    """Shard ``shard``'s flush ``seq`` of the interval before START, holding a counter per name."""
    header = FlushHeader(shard=shard, shards=SHARDS, epoch=epoch, seq=seq, interval_start=START - INTERVAL,
                         interval=INTERVAL, n=len(names), **fields)
    return contract.encode_flush(header, aggregates(*names))


def ledger(run: Path) -> dict[str, list[float]]:
    """The forwarder's loss ledger in the run directory: "shard|stream" → [last seq, metrics through it, seen]."""
    path = run / "forwarder-ledger.json"
    recorded: dict[str, list[float]] = json.loads(path.read_text()) if path.exists() else {}
    return recorded


def file_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Bench:
    """A run directory with a config file, a fake clock, and the shards' PUSH sockets."""

    def __init__(self, tmp_path: Path, ctx: Ctx, stack: ExitStack) -> None:
        self.run = tmp_path / "run"
        self.run.mkdir(mode=0o700)
        self.config_file = tmp_path / "pystatsd.yaml"
        self.out = tmp_path / "out.jsonl"
        self.write_config(self.out)
        self.ctx, self.stack = ctx, stack
        self.clock = FakeClock(START + 1.0)
        self.memory = MemorySink(SinkConfig())
        self.shards: list[zmq.Socket[bytes]] = []
        for _ in range(SHARDS):
            push = ctx.socket(zmq.PUSH)
            push.connect(forwarder_endpoint(self.run))
            self.shards.append(push)

    def write_config(self, out: Path) -> None:
        self.config_file.write_text(f"flush_interval: {INTERVAL}\nforwarders:\n  file:\n    path: {out}\n")

    def forwarder(self, stopped_alone: bool = False, sinks: list[Sink] | None = None) -> Forwarder:
        """A forwarder on the config file's file sink and, unless ``sinks`` says otherwise, the memory sink."""
        config = load_config(self.config_file)
        built = [NamedSink(sink.name, sink, BufferConfig()) for sink in (sinks if sinks is not None else [self.memory])]
        fanout = Fanout(built + build_sinks(config))
        fanout.start()
        forwarder = Forwarder(config, SHARDS, fanout, self.ctx, self.run, self.config_file, clock=self.clock,
                              stopped_alone=lambda run_dir: stopped_alone)
        self.stack.callback(fanout.stop, 0.5, 0.5)
        self.stack.callback(forwarder.pull.close, 0)
        self.stack.callback(forwarder.tap.close)
        return forwarder

    def send(self, shard: int, frames: list[bytes]) -> None:
        self.shards[shard].send_multipart(frames)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    ctx: Ctx = zmq.Context()
    with ExitStack() as stack:
        yield Bench(tmp_path, ctx, stack)
    ctx.destroy(linger=0)


def take(forwarder: Forwarder, messages: int) -> None:
    """What the loop does on a wake-up, until ``messages`` came."""
    taken = [0]

    def more() -> bool:
        taken[0] += forwarder.receive_all()
        return taken[0] >= messages

    wait_for(more, 5, f"{messages} messages at the forwarder", every=0.01)


def later(secs: float, action: Callable[[], None]) -> threading.Thread:
    """``action`` on a thread after ``secs``: a shard that answers while the forwarder waits for it."""
    thread = threading.Thread(target=lambda: (time.sleep(secs), action()))
    thread.start()
    return thread


def test_each_flush_reaches_every_sink(bench: Bench) -> None:
    forwarder = bench.forwarder()
    bench.send(0, flush(0, 1, "a", "b"))
    bench.send(1, flush(1, 1, "c"))
    take(forwarder, 2)
    wait_for(lambda: len(bench.memory.got) == 2 and len(file_lines(bench.out)) == 3, 5, "both flushes in both sinks")
    assert sorted(bench.memory.names()) == ["a", "b", "c"]
    assert sorted(a["name"] for a in file_lines(bench.out)) == ["a", "b", "c"]
    assert sorted((header.shard, header.seq) for header, _ in bench.memory.got) == [(0, 1), (1, 1)]


RECORDS = [{"name": "deploy", "type": "event", "tags": {"env": "prod"}, "timestamp": 1700000001, "text": "v2",
            "hostname": "", "aggregation_key": "", "priority": "normal", "source_type_name": "", "alert_type": "info"},
           {"name": "db.up", "type": "service_check", "tags": {}, "timestamp": 1700000002, "status": 0,
            "status_name": "ok", "hostname": "", "message": ""}]


def records(seq: int, *chosen: dict[str, Any]) -> list[bytes]:
    return contract.encode_records(contract.RecordsHeader(src="receiver", epoch=5, seq=seq, n=len(chosen)),
                                   list(chosen))


def test_records_reach_only_the_sinks_that_carry_them_and_no_ledger(bench: Bench) -> None:
    forwarder = bench.forwarder()
    bench.send(0, records(0, *RECORDS))
    bench.send(0, flush(0, 1, "a"))
    take(forwarder, 2)
    wait_for(lambda: len(file_lines(bench.out)) == 3 and bench.memory.got, 5, "the records and the flush")
    # The json file sink writes each record as it came; a sink that writes no records gets the flush alone.
    assert file_lines(bench.out)[:2] == RECORDS and file_lines(bench.out)[2]["name"] == "a"
    assert bench.memory.names() == ["a"]
    assert (forwarder.records_without_sink, forwarder.bad_messages, forwarder.lost_flushes) == (0, 0, 0)


def test_records_no_sink_carries_are_counted_and_malformed_ones_are_bad_messages(bench: Bench) -> None:
    bench.config_file.write_text(f"flush_interval: {INTERVAL}\nforwarders:\n  file:\n    path: {bench.out}\n"
                                 "    format: influx\n")
    forwarder = bench.forwarder()
    bench.send(0, records(0, *RECORDS))
    broken = records(1, *RECORDS)
    broken[1] = records(1, RECORDS[0])[1]  # a header that says one record, a body of two
    bench.send(1, broken)
    take(forwarder, 2)
    assert (forwarder.records_without_sink, forwarder.bad_messages) == (2, 1)


def test_a_gap_in_a_shards_flush_sequence_is_counted_as_lost_flushes(bench: Bench) -> None:
    forwarder = bench.forwarder()
    for shard, frames in ((0, flush(0, 1, "a")), (0, flush(0, 2, "a")), (0, flush(0, 5, "a")),  # 3, 4 never came
                          (1, flush(1, 1, "b")), (1, flush(1, 2, "b")),
                          (1, flush(1, 0, "b", epoch=8))):  # a restarted shard's new stream: no gap
        bench.send(shard, frames)
    take(forwarder, 6)
    assert forwarder.lost_flushes == 2
    assert forwarder.bad_messages == 0


def test_the_ledger_records_coverage_and_counts_what_a_crashed_forwarder_held(bench: Bench) -> None:
    stream = "receiver@5"
    first = bench.forwarder()
    # Batches 0..2 of the stream (30 metrics), delivered: recorded in the run directory's ledger.
    bench.send(0, flush(0, 1, "a", covers={stream: [0, 0, 2, 30]}))
    take(first, 1)
    wait_for(lambda: "0|receiver@5" in ledger(bench.run), 5, "the first flush in the ledger")
    assert ledger(bench.run)["0|receiver@5"][:2] == [2, 30]
    # Batches 3..4 (20 metrics) taken, but a sink is stuck on them when the forwarder dies.
    bench.memory.gate.clear()
    bench.send(0, flush(0, 2, "a", covers={stream: [3, 30, 4, 50]}))
    take(first, 1)
    first.pull.close(linger=0)  # the crash: nothing more is done with what it held
    # The next instance, on the same run directory, takes the flush after: the gap is what the dead one held.
    second = bench.forwarder(sinks=[])
    bench.send(0, flush(0, 3, "a", covers={stream: [5, 50, 6, 70]}))
    take(second, 1)
    wait_for(lambda: second.ledger.lost_metrics, 5, "the gap counted")
    assert second.ledger.lost_metrics == {0: 20}
    assert second.ledger.lost_batches == {0: 2}
    assert ledger(bench.run)["0|receiver@5"][:2] == [6, 70]
    bench.memory.gate.set()


def test_its_own_figures_flush_at_the_interval_edge_stamped_with_the_interval_that_ended(bench: Bench) -> None:
    forwarder = bench.forwarder()
    bench.send(0, flush(0, 1, "a"))
    bench.send(0, flush(0, 3, "a"))
    take(forwarder, 2)
    wait_for(lambda: len(bench.memory.got) == 2, 5, "the shard's flushes")
    bench.clock.to(START + INTERVAL - 0.001)
    forwarder.report_if_due()
    assert len(bench.memory.got) == 2
    assert process_name(FORWARDER) not in read_all(bench.run)
    bench.clock.to(START + INTERVAL)
    forwarder.report_if_due()
    wait_for(lambda: len(bench.memory.got) == 3, 5, "the forwarder's own flush")
    header, own = bench.memory.got[2]
    assert header.from_forwarder
    assert (header.interval_start, header.interval, header.n) == (START, INTERVAL, len(own))
    assert {a["timestamp"] for a in own} == {START + INTERVAL}
    lost = [a["value"] for a in own if a["name"] == "pystatsd.forwarder.lost_flushes"]
    assert lost == [1.0]
    figures = read_all(bench.run)[process_name(FORWARDER)]["figures"]
    assert figures["lost_flushes"] == 1 and figures["sinks"]["memory"]["delivered"] == 2
    assert forwarder.next_report == START + 2 * INTERVAL


# The clock stands still: a stop waiting for what never comes would wait until this.
@pytest.mark.timeout(10)
def test_a_stop_for_a_restart_pauses_the_shards_and_takes_what_they_sent_before_their_pause(bench: Bench) -> None:
    forwarder = bench.forwarder(stopped_alone=True)
    bench.send(0, flush(0, 1, "a"))
    bench.send(0, flush(0, 2, paused=True))
    # Shard 1 answers only while the forwarder waits: a flush it had, then its pause.
    answer = later(0.3, lambda: (bench.send(1, flush(1, 1, "b")), bench.send(1, flush(1, 2, paused=True))))
    forwarder.stop()
    answer.join()
    # Written for the shards, and left for the next instance to end once it has bound.
    assert read_pause(forwarder_pause_path(bench.run)) is not None
    assert forwarder.paused == {(0, SHARDS), (1, SHARDS)}
    assert sorted(bench.memory.names()) == ["a", "b"]
    assert sorted(a["name"] for a in file_lines(bench.out)) == ["a", "b"]
    assert forwarder.finals == set()


# The clock stands still: a stop waiting for what never comes would wait until this.
@pytest.mark.timeout(10)
def test_a_stop_of_the_pipeline_waits_for_every_shards_final_flush(bench: Bench) -> None:
    forwarder = bench.forwarder(stopped_alone=False)
    bench.send(0, flush(0, 1, "a", final=True))
    answer = later(0.3, lambda: bench.send(1, flush(1, 1, "b", final=True)))
    forwarder.stop()
    answer.join()
    assert forwarder.finals == {(0, SHARDS), (1, SHARDS)}
    assert sorted(bench.memory.names()) == ["a", "b"]
    assert not forwarder_pause_path(bench.run).exists()


def test_a_reload_swaps_the_sinks_from_the_next_flush(bench: Bench, tmp_path: Path) -> None:
    forwarder = bench.forwarder(sinks=[])
    bench.send(0, flush(0, 1, "before"))
    take(forwarder, 1)
    wait_for(lambda: file_lines(bench.out), 5, "the first flush in the first file")
    moved = tmp_path / "moved.jsonl"
    bench.write_config(moved)
    forwarder.reload()
    bench.send(0, flush(0, 2, "after"))
    take(forwarder, 1)
    wait_for(lambda: file_lines(moved), 5, "the next flush in the new file")
    assert [a["name"] for a in file_lines(bench.out)] == ["before"]
    assert [a["name"] for a in file_lines(moved)] == ["after"]
    assert forwarder.config.forwarders["file"]["path"] == str(moved)


def test_a_sink_a_reload_removes_drains_on_its_own_and_what_it_still_holds_is_counted_removed(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    # The drain a stop gives (20 s), shortened: what it bounds is the same.
    monkeypatch.setattr(forwarder_loop, "FORWARDER_STOP", dataclasses.replace(FORWARDER_STOP, sink_drain_secs=0.5))
    held = [f"rb.c{i}" for i in range(69)]  # as many as the user saw lost when debug_mode replaced Kafka
    forwarder = bench.forwarder()
    bench.memory.down = True
    bench.send(0, flush(0, 1, *held))
    take(forwarder, 1)
    wait_for(lambda: forwarder.fanout.figures()["memory"]["waiting"] == len(held), 5, "the held aggregates")
    forwarder.reload()  # the config file names the file sink only
    # The removed sink drains on its own thread: the other sinks and the loop go on meanwhile.
    bench.send(0, flush(0, 2, "rb.after"))
    take(forwarder, 1)
    wait_for(lambda: "rb.after" in [a["name"] for a in file_lines(bench.out)], 5, "the next flush in the file sink")
    wait_for(lambda: forwarder.fanout.figures()["memory"]["waiting"] == 0, 5, "the removed sink's drain to end")
    bench.clock.to(START + INTERVAL)
    forwarder.report_if_due()
    row = read_all(bench.run)[process_name(FORWARDER)]["figures"]["sinks"]["memory"]
    assert (row["delivered"], row["dropped"], row["removed"]) == (0, {"removed": len(held)}, True)
    wait_for(lambda: any(a["name"] == "pystatsd.forwarder.dropped" for a in file_lines(bench.out)), 5,
             "the forwarder's own flush in the file sink")
    dropped = [(a["tags"], a["value"]) for a in file_lines(bench.out) if a["name"] == "pystatsd.forwarder.dropped"]
    assert dropped == [({"sink": "memory", "reason": "removed"}, float(len(held)))]
    assert [a["name"] for a in file_lines(bench.out)][:len(held) + 1] == [*held, "rb.after"]
