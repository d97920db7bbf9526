"""Golden files of the run-directory formats that outlive a process, as test_contract.py keeps the wire's.

An upgrade by restart has the old release write these files and the new one read them: the shard
hand-off (``pystatsd.handoff.v1``, stages.aggregator.handoff), the gauges carried across a reshard
(``pystatsd.gauges.v1``, stages.aggregator.gauge_carry), the receiver's hand-over to its next image
(``pystatsd.handover.v1``, stages.receiver.handover) and the shard ring of a reshard (``ring.json``,
stages.rundir.ring, unversioned: keys are only added, each read with a default). Each golden under
tests/data/rundir/ was written once, when its form was fixed. Within a version keys may only be
added, each with a default, and each addition gets a golden of its own: today's writer produces
exactly the newest golden for the fixed input below, and every golden decodes back to that input
(the added keys taking their defaults).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import msgpack
import pytest

from stages.aggregator.gauge_carry import decode_carried, encode_carried
from stages.aggregator.handoff import Handoff, HandoffRefused
from stages.common.config import Config, QueueConfig
from stages.common.config_diff import restart_settings
from stages.common.contract import BatchBody, pack_batch_body, pack_entry_metrics, pack_values
from stages.receiver.handover import decode_handover, encode_handover, running_config
from stages.rundir.ring import RING_FILE, Ring, read_ring, write_ring

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "rundir"

#: One closed bucket of every section, as capture() hands it on.
BUCKET_BODY = BatchBody(
    counters=["api.hits\x1fenv\x1fprod", 6.0],
    gauges=["queue.depth", True, 12.0],
    sampled=["api.latency", 4, 3.0, pack_values([37.8, 12.25, 1000.0])],
    sets=["api.users", ["u42", "u7"]],
    traces=["checkout", 1.0],
)
HANDOFF = Handoff(
    shard=1, shards=4, interval=10.0, written_at=1700000012.5, epoch=1_700_000_000_000_000_000, seq=9,
    closed_through=169999999,
    buckets={170000000: (pack_batch_body(BUCKET_BODY), 9, {"receiver@7": [1, 4, 0, 9]}, {"api.hits": 2})},
    gauges=[["queue.depth", 12.0, 170000000], ["pool.free\x1fdb\x1fmain", -2.5, 169999990]],
    gauges_folded={"pool.free": 1},
    streams=[["receiver", 7, 4, 9]],
    seq_gaps={"receiver": 1}, gap_metrics={"receiver": 3}, late_metrics=2, metrics=40,
)
#: A receiver with a UDP, a TCP (one connection, half a line in it) and a Unix datagram listener.
HELD = {"udp://127.0.0.1:8125": {"fd": 5},
        "tcp://127.0.0.1:8125": {"server": 6, "connections": [[9, "6869", False]]},
        "unixgram:///run/pystatsd/statsd.sock": {"fd": 7}}
RUNNING = Config(flush_interval=5.0, run_dir="/var/run/pystatsd", health_address="127.0.0.1:8126",
                 queues=QueueConfig(shard_batches=100, forwarder_flushes=50))
CARRIED = [["queue.depth", 12.0, 170000000], ["pool.free\x1fdb\x1fmain", -2.5, 169999990]]
#: v1.1 of each: what a rule's ttl makes of a gauge's expiry (idle intervals), live and in the open bucket.
HANDOFF_1 = dataclasses.replace(HANDOFF, gauge_expiry={"queue.depth": 30},
                                bucket_gauge_ttls={170000000: {"queue.depth": 30}})
CARRIED_EXPIRY = {"queue.depth": 30}
#: v1.2 of the hand-off: its bucket's series' metrics (the counter's 2, the gauge's 1, the timer's 3, the set's 2,
#: the trace's 1: the bucket's 9).
HANDOFF_2 = dataclasses.replace(HANDOFF_1, bucket_entry_metrics={170000000: pack_entry_metrics([2, 1, 3, 2, 1])})


def test_a_handoff_encodes_to_the_newest_v1_golden_bytes() -> None:
    assert HANDOFF_2.encode() == (GOLDEN / "handoff.v1.2.bin").read_bytes()


def test_the_golden_handoffs_decode_to_the_handoff() -> None:
    assert Handoff.decode((GOLDEN / "handoff.v1.2.bin").read_bytes()) == HANDOFF_2
    # v1.1, before the entry metrics: each entry one metric
    assert Handoff.decode((GOLDEN / "handoff.v1.1.bin").read_bytes()) == HANDOFF_1
    # v1, before the ttls: every gauge on the default expiry
    assert Handoff.decode((GOLDEN / "handoff.v1.bin").read_bytes()) == HANDOFF


def test_a_handoff_of_another_kind_or_with_a_field_this_release_does_not_know_is_refused() -> None:
    raw = msgpack.unpackb((GOLDEN / "handoff.v1.bin").read_bytes(), raw=False, strict_map_key=False)
    for changed in ({**raw, "kind": "pystatsd.handoff.v2"}, {**raw, "added_by_a_newer_release": 1}):
        with pytest.raises(HandoffRefused):
            Handoff.decode(msgpack.packb(changed, use_bin_type=True))


def test_carried_gauges_encode_to_the_newest_v1_golden_bytes() -> None:
    assert encode_carried(CARRIED, CARRIED_EXPIRY) == (GOLDEN / "gauges.v1.1.bin").read_bytes()
    assert encode_carried(CARRIED) == (GOLDEN / "gauges.v1.bin").read_bytes()  # no ttl: as v1 wrote it


def test_the_golden_carried_gauges_decode_to_the_gauges() -> None:
    assert decode_carried((GOLDEN / "gauges.v1.1.bin").read_bytes()) == (CARRIED, CARRIED_EXPIRY)
    assert decode_carried((GOLDEN / "gauges.v1.bin").read_bytes()) == (CARRIED, {})


def test_a_gauge_carry_of_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"pystatsd\.gauges\.v1"):
        decode_carried(msgpack.packb({"kind": "pystatsd.gauges.v2", "gauges": CARRIED}))


def test_a_handover_encodes_to_the_newest_v1_golden_bytes() -> None:
    assert encode_handover(4242, 3, HELD, RUNNING) == (GOLDEN / "handover.v1.json").read_bytes()


def test_the_golden_handover_decodes_to_what_was_handed_over() -> None:
    record = decode_handover((GOLDEN / "handover.v1.json").read_bytes())
    assert (record["pid"], record["kernel_drops"], record["listeners"]) == (4242, 3, HELD)
    # Every key a reload cannot change stays as the last image ran it, whatever the config says now.
    assert restart_settings(running_config(Config(), record)) == restart_settings(RUNNING)


def test_the_unversioned_handover_of_the_release_before_is_read_as_v1() -> None:
    record = decode_handover((GOLDEN / "handover.unversioned.json").read_bytes())
    assert (record["pid"], record["kernel_drops"], record["listeners"]) == (4242, 3, HELD)
    # It carried flush_interval and queues only: the rest is as the config read anew says.
    running = running_config(Config(run_dir="/srv/run"), record)
    assert (running.flush_interval, running.queues, running.run_dir) == (5.0, RUNNING.queues, "/srv/run")


@pytest.mark.parametrize(("record", "reason"), [
    ({"kind": "pystatsd.handover.v2", "pid": 1, "listeners": {}}, "pystatsd.handover.v2"),
    ({"kind": "pystatsd.handover.v1", "listeners": {}}, "'pid'"),
    ({"pid": 1}, "'listeners'"),
    ([], "not a JSON object"),
])
def test_a_handover_of_another_kind_or_without_a_key_is_refused_naming_it(record: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_handover(json.dumps(record).encode())


#: The ring of a reshard from 2 shards to 4, from the interval edge at 1700000010.
RING = Ring(4, 1700000010.0, previous=2)


def test_a_ring_writes_the_newest_golden_bytes(tmp_path: Path) -> None:
    write_ring(tmp_path, RING)
    assert (tmp_path / RING_FILE).read_bytes() == (GOLDEN / "ring.previous.json").read_bytes()


def test_the_golden_rings_read_back_the_older_one_without_previous(tmp_path: Path) -> None:
    (tmp_path / RING_FILE).write_bytes((GOLDEN / "ring.previous.json").read_bytes())
    assert read_ring(tmp_path) == RING
    # The release before wrote no "previous": its new shards then wait for no retiring shard's gauges.
    (tmp_path / RING_FILE).write_bytes((GOLDEN / "ring.unversioned.json").read_bytes())
    assert read_ring(tmp_path) == RING._replace(previous=None)
