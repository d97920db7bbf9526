"""The receiver's batch window: repeats counted and summed, gauges in order, metrics accounted per batch.

Batches go through real ZeroMQ sockets (inproc) and are decoded with the contract, as a shard does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from stages import contract
from stages.model import MetricType, Sample
from stages.receiver.batcher import WINDOW_BATCHES, Batcher
from stages.receiver.parsers import parse_datagram, statsd, tally_payloads
from stages.receiver.tally import Tally
from stages.sharding import shard_for

C, G, GD, MS, S = (int(t) for t in (MetricType.COUNTER, MetricType.GAUGE, MetricType.GAUGE_DELTA,
                                    MetricType.TIMER, MetricType.SET))
#: One defaults object for the whole module, as a receiver has: the parser's memory lives as long as it.
DEFAULTS: dict[str, str] = {}
NOW = 1000.25


@pytest.fixture
def shards() -> Iterator[tuple[list[zmq.Socket[bytes]], list[zmq.Socket[bytes]]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pulls, pushes = [], []
    for shard in range(2):
        pull = ctx.socket(zmq.PULL)
        pull.bind(f"inproc://shard-{shard}")
        push = ctx.socket(zmq.PUSH)
        push.connect(f"inproc://shard-{shard}")
        pulls.append(pull)
        pushes.append(push)
    yield pushes, pulls
    ctx.destroy(linger=0)


def received(pull: zmq.Socket[bytes]) -> list[tuple[contract.BatchHeader, list[Sample]]]:
    batches = []
    while pull.poll(0):
        batches.append(contract.decode_batch(pull.recv_multipart()))
    return batches


def test_repeats_leave_once_summed_and_gauges_keep_their_order(shards) -> None:
    pushes, pulls = shards
    batcher = Batcher(pushes, "r1", max_samples=1000, max_age_secs=0.05, interval=10.0)
    hits = ("hits", C, 1.0, 1.0, ("env", "prod"))
    sampled = ("hits", C, 2.0, 0.5, ("env", "prod"))
    samples = [hits] * 700 + [sampled] * 3 + [("lat", MS, 5.0, 1.0, ())] * 3 + [("users", S, "u1", 1.0, ())] * 4
    samples += [("temp", G, 1.0, 1.0, ()), ("temp", G, 2.0, 1.0, ()), ("temp", GD, 5.0, 1.0, ()),
                ("temp", G, 1.0, 1.0, ())]
    batcher.add(samples, NOW)
    batcher.send_all()

    batches = [batch for pull in pulls for batch in received(pull)]
    bodies = {name: shard for shard, pull in enumerate(pulls) for name in ("hits", "lat", "users", "temp")
              if shard_for(name, 2) == shard}
    assert len(bodies) == 4
    entries = [sample for _, body in batches for sample in body]
    assert Counter(entries) == Counter({
        ("hits", C, 700.0, 1.0, ("env", "prod")): 1,
        ("hits", C, 12.0, 1.0, ("env", "prod")): 1,  # 3 × 2.0 at @0.5
        ("lat", MS, 5.0, 1.0, ()): 3,
        ("users", S, "u1", 1.0, ()): 1,
        ("temp", G, 1.0, 1.0, ()): 2, ("temp", G, 2.0, 1.0, ()): 1, ("temp", GD, 5.0, 1.0, ()): 1,
    })
    assert [s[1:3] for s in entries if s[0] == "temp"] == [(G, 1.0), (G, 2.0), (GD, 5.0), (G, 1.0)]
    assert all(header.ts == NOW for header, _ in batches)
    assert sum(header.metrics for header, _ in batches) == len(samples) == batcher.sent_samples


def test_a_shard_holding_more_than_max_samples_gets_several_batches_whose_metrics_add_up(shards) -> None:
    pushes, pulls = shards
    batcher = Batcher(pushes[:1], "r1", max_samples=3, max_age_secs=0.05, interval=10.0)
    samples = [("a", C, 1.0, 1.0, ())] * 10 + [(f"t{i}", MS, 1.0, 1.0, ()) for i in range(4)]
    batcher.add(samples, NOW)
    batcher.send_all()
    batches = received(pulls[0])
    assert [(header.seq, header.n, header.metrics, header.sent_before) for header, _ in batches] == [
        (0, 3, 12, 0), (1, 2, 2, 12)]


def test_a_window_leaves_early_once_it_holds_its_full_batches(shards) -> None:
    pushes, pulls = shards
    batcher = Batcher(pushes[:1], "r1", max_samples=2, max_age_secs=0.05, interval=10.0)
    distinct = [(f"c{i}", C, 1.0, 1.0, ()) for i in range(WINDOW_BATCHES * 2)]
    batcher.add(distinct[:-1] * 3, NOW)  # repeats make no new entries
    assert received(pulls[0]) == []
    batcher.add(distinct[-1:], NOW)
    batches = received(pulls[0])
    assert [header.n for header, _ in batches] == [2] * WINDOW_BATCHES
    assert sum(header.metrics for header, _ in batches) == 3 * len(distinct) - 2


def test_a_full_shard_queue_counts_the_metrics_the_lost_batch_stood_for() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = ctx.socket(zmq.PUSH)  # connected to nothing: every send finds no room, as with a full queue
    try:
        batcher = Batcher([push], "r1", max_samples=1000, max_age_secs=0.05, interval=10.0)
        batcher.add([("hits", C, 1.0, 1.0, ())] * 50, NOW)
        batcher.send_all()
        assert (batcher.dropped, batcher.sent_samples, batcher.seq) == ([50], 0, [0])
    finally:
        ctx.destroy(linger=0)


def test_the_window_leaves_at_the_interval_edge_and_when_old(shards) -> None:
    pushes, pulls = shards
    batcher = Batcher(pushes, "r1", max_samples=1000, max_age_secs=0.05, interval=10.0)
    batcher.add([("hits", C, 1.0, 1.0, ())], 1009.9)
    assert batcher.next_due() == pytest.approx(1009.95)
    batcher.add([("hits", C, 1.0, 1.0, ())], 1009.99)
    assert batcher.next_due() == pytest.approx(1009.95)  # a window's age counts from its first sample
    batcher.add([("hits", C, 1.0, 1.0, ())], 1010.0)  # the edge: the first window leaves on its own
    assert [(header.ts, header.metrics) for pull in pulls for header, _ in received(pull)] == [(1009.9, 2)]
    assert batcher.next_due() == pytest.approx(1010.05)
    batcher.send_due(1010.03)
    assert [header.ts for pull in pulls for header, _ in received(pull)] == []
    batcher.send_due(1010.06)
    assert [header.ts for pull in pulls for header, _ in received(pull)] == [1010.0]
    assert batcher.next_due() is None


STATSD_LINES = [
    "hits:1|c", "hits:1|c|#env:prod", "hits:2|c|@0.5", "lat:3.5|ms", "lat:3.5|ms|#env:prod", "temp:20|g",
    "temp:+2|g", "temp:-1|g", "users:u1|s", "users:u2|s", "multi:1:2:3|d", "bad line", "x:1|zz", "hits:1|c\r",
    " hits:1|c", "hits:1|c\n", "", "hits:\x01|c",
]
OTHER_LINES = ['{"metric_name": "j", "metric_type": "counter", "value": 1}', "[1]", "\udcff\udcfe",
               # statsd after a statsd line, JSON at the start of a payload: never to be remembered
               "[x:1|c", "{x:1|c", "  {x:1|c", " ", "\t[1]"]


def check_tally_matches_parse(datagrams: list[list[str]]) -> None:
    # Each burst twice: the second time its lines are remembered and are counted, not parsed.
    burst = ["\n".join(lines).encode("utf-8", "surrogateescape") for lines in datagrams]
    parsed: list[Sample] = []
    parse_bad: dict[str, int] = {}
    for payload in burst * 2:
        parse_datagram(payload, DEFAULTS, parsed, parse_bad)
    tally, tally_bad = Tally(), {}
    tally_payloads(burst, DEFAULTS, tally, tally_bad)
    tally_payloads(burst, DEFAULTS, tally, tally_bad)
    assert tally.metrics == len(parsed)
    assert tally_bad == parse_bad
    assert tally.counts == Counter(s for s in parsed if s[1] not in (G, GD))
    assert tally.ordered == [s for s in parsed if s[1] in (G, GD)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(STATSD_LINES), min_size=1, max_size=12), min_size=1, max_size=8))
def test_a_burst_of_statsd_read_as_one_text_gives_what_parsing_each_datagram_does(datagrams) -> None:
    check_tally_matches_parse(datagrams)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(STATSD_LINES + OTHER_LINES), min_size=1, max_size=12), min_size=1,
                max_size=8))
def test_a_burst_with_other_formats_gives_what_parsing_each_datagram_does(datagrams) -> None:
    check_tally_matches_parse(datagrams)


@pytest.mark.parametrize("line", ["[x:1|c", "{x:1|c", "  [x:1|c"])
def test_a_line_read_as_statsd_inside_a_payload_is_json_where_it_starts_one(line: str) -> None:
    # Inside a statsd payload the line is statsd; the same line as a payload of its own is JSON
    # (a bad document here), however often it was seen inside one before.
    inside = f"hits:1|c\n{line}".encode()
    for burst in ([inside], [inside], [inside], [line.encode()], [inside, line.encode()]):
        expected: list[Sample] = []
        expected_bad: dict[str, int] = {}
        for payload in burst:
            parse_datagram(payload, DEFAULTS, expected, expected_bad)
        tally, bad = Tally(), {}
        tally_payloads(burst, DEFAULTS, tally, bad)
        assert (tally.counts, bad) == (Counter(expected), expected_bad)


def test_a_remembered_burst_is_counted_without_parsing(monkeypatch) -> None:
    burst = [b"hits:1|c\nerrors:3|c|#env:prod", b"hits:1|c\n"]
    tally_payloads(burst, DEFAULTS, Tally(), {})
    tally_payloads(burst, DEFAULTS, Tally(), {})  # every line is remembered now

    def no_parsing(*args: object) -> None:
        raise AssertionError("parsed a remembered line again")

    monkeypatch.setattr("stages.receiver.parsers.statsd.parse", no_parsing)
    tally = Tally()
    tally_payloads(burst, DEFAULTS, tally, {})
    assert (tally.metrics, tally.counts[("hits", C, 1.0, 1.0, ())], tally.ordered) == (3, 2, [])


def test_a_full_line_memory_keeps_its_counters_and_forgets_timer_values(monkeypatch) -> None:
    monkeypatch.setattr(statsd, "MAX_REMEMBERED", 100)
    counters = [f"hits{i}:1|c" for i in range(20)]
    timers = [f"lat:{i}.5|ms" for i in range(200)]
    for burst in (counters, counters, timers, timers):  # a line is remembered once its identity is known
        tally_payloads(["\n".join(burst).encode()], DEFAULTS, Tally(), {})
    assert set(counters) <= set(statsd._Memory.lines)
    assert len(statsd._Memory.lines) <= 100
