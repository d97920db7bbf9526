"""The receiver counts what the rules of its window drop (stages.receiver.identity), in its figures and its
self-metrics, and files it under no other count: the config gives no rules yet, so a test gives the window some."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from harness.ports import free_ports
from stages.common import contract
from stages.common.config import Config
from stages.common.model import Tags, split_series_key
from stages.receiver import receiver_loop
from stages.receiver.identity import DROP, Decision
from stages.receiver.window import Window
from stages.rundir.figures import read_all


def debug_dropped(name: str, mtype: int, tags: Tags) -> Decision:
    return DROP if name.startswith("debug.") else None


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[receiver_loop.Receiver]:
    made = receiver_loop.new_window

    def with_rules(*args: object, rules: object = None, **options: object) -> Window:
        assert rules is None  # what the receiver asks for today
        return made(*args, rules=debug_dropped, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(receiver_loop, "new_window", with_rules)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    (port,) = free_ports(1, socket.SOCK_DGRAM)
    made_receiver = receiver_loop.Receiver(Config(bind_port=port), 1, ctx, tmp_path, "receiver")
    yield made_receiver
    for listener in made_receiver.listeners:
        listener.close()
    ctx.destroy(linger=0)


def test_what_rules_drop_is_counted_in_the_figures_and_the_self_metrics(tmp_path: Path,
                                                                       receiver: receiver_loop.Receiver) -> None:
    receiver.receive([b"debug.a:1|c\ndebug.b:1:2|ms\nkept:1|c", b"kept:1|c|#k:v"])
    assert (receiver.metrics, receiver.rule_dropped) == (2, 3)
    receiver.report(time.time())
    assert read_all(tmp_path)["receiver"]["figures"]["rule_dropped"] == 3
    counters: dict[str, float] = {}
    for batches in receiver.batcher.window.take(1000):
        for body, _, _ in batches:
            keys_and_sums = contract.decode_batch_body(body).counters
            counters.update({split_series_key(key)[0]: value
                             for key, value in zip(keys_and_sums[::2], keys_and_sums[1::2], strict=True)})
    assert counters["pystatsd.receiver.rule_dropped"] == 3.0
    assert counters["pystatsd.receiver.metrics"] == 2.0
