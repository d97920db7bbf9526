"""The receiver applies the config's rules (stages.receiver.rules) in its windows, and counts per rule what
each mapped and dropped, and what no rule matched, in its figures and its self-metrics; nothing else is
counted differently for it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from harness.ports import free_ports
from stages.common import contract
from stages.common.config import Config
from stages.common.model import split_series_key
from stages.receiver import receiver_loop
from stages.rundir.figures import read_all

pytestmark = pytest.mark.serverless

RULES = [{"match": "debug.*", "drop": True},
         {"match": "api.*.*.latency", "name": "api.latency", "tags": {"host": "$1", "method": "$2"}}]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[receiver_loop.Receiver]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    (port,) = free_ports(1)
    made_receiver = receiver_loop.Receiver(Config(bind_port=port, rules=RULES), 1, ctx, tmp_path, "receiver")
    yield made_receiver
    for listener in made_receiver.listeners:
        listener.close()
    ctx.destroy(linger=0)


def taken(receiver: receiver_loop.Receiver) -> dict[tuple[str, tuple[str, ...]], float]:
    counters: dict[tuple[str, tuple[str, ...]], float] = {}
    for batches in receiver.batcher.window.take(1000):
        for body, *_ in batches:
            keys_and_sums = contract.decode_batch_body(body).counters
            counters.update({split_series_key(key): value
                             for key, value in zip(keys_and_sums[::2], keys_and_sums[1::2], strict=True)})
    return counters


def test_what_each_rule_maps_and_drops_is_counted_in_the_figures_and_the_self_metrics(
        tmp_path: Path, receiver: receiver_loop.Receiver) -> None:
    receiver.receive([b"debug.a:1|c\ndebug.b:1:2|ms\nkept:1|c", b"kept:1|c|#k:v",
                      b"api.h1.GET.latency:3|c\napi.h2.GET.latency:4|c\napi.h1.GET.latency:5|c"])
    # every metric counted once: in the window (mapped or unmatched), or dropped by its rule
    assert (receiver.metrics, receiver.rule_dropped) == (5, 3)
    receiver.report(time.time())
    figures = read_all(tmp_path)["receiver"]["figures"]
    assert (figures["rule_dropped"], figures["rule_unmatched"]) == (3, 2)
    assert figures["rules"] == {"rules[0]": {"dropped": 3}, "rules[1]": {"mapped": 3}}
    counters = taken(receiver)
    assert counters[("api.latency", ("host", "h1", "method", "GET"))] == 8.0
    assert counters[("api.latency", ("host", "h2", "method", "GET"))] == 4.0
    own = {(name, tags): value for (name, tags), value in counters.items() if name.startswith("pystatsd.")}
    assert own[("pystatsd.receiver.rule_dropped", ("receiver", "receiver", "rule", "rules[0]"))] == 3.0
    assert own[("pystatsd.receiver.rule_mapped", ("receiver", "receiver", "rule", "rules[1]"))] == 3.0
    assert own[("pystatsd.receiver.rule_unmatched", ("receiver", "receiver"))] == 2.0
    assert own[("pystatsd.receiver.metrics", ("receiver", "receiver"))] == 5.0
    assert ("pystatsd.receiver.rule_mapped", ("receiver", "receiver", "rule", "rules[0]")) not in own


def test_without_rules_the_window_asks_nothing(tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    (port,) = free_ports(1)
    plain = receiver_loop.Receiver(Config(bind_port=port), 1, ctx, tmp_path, "receiver")
    try:
        assert plain.rules is None
        plain.receive([b"debug.a:1|c"])
        assert plain.batcher.window.tallies == []
        assert plain.figures(0)["rules"] == {} and plain.figures(0)["rule_unmatched"] == 0
    finally:
        for listener in plain.listeners:
            listener.close()
        ctx.destroy(linger=0)
