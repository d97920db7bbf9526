"""The tap point's bookkeeping with real ZeroMQ sockets: it knows a tap listens from its subscription
alone, stops when the tap goes, gives each tap at most its rate a second, and a spec filters by glob
and tags; the command's options are read or refused naming the option."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import zmq

from harness.wait import wait_for
from stages.common.tap import FLUSHED, LISTENING, LOOK_EVERY_SECS, TapPoint, TapSpec, tap_endpoint
from stages.control.tap import TapArgumentError, parse_rate, parse_tags


def test_a_spec_is_its_topic_and_filters_by_glob_and_tags() -> None:
    spec = TapSpec(where=FLUSHED, match="api.*", tags=(("env", "prod"),), rate=5, nonce="n1")
    assert TapSpec.from_topic(spec.topic()) == spec
    assert spec.wants("api.latency", ("env", "prod", "host", "a"))
    assert not spec.wants("api.latency", ("env", "dev"))
    assert not spec.wants("web.latency", ("env", "prod"))
    with pytest.raises(ValueError, match="not a tap spec"):
        TapSpec.from_topic(b"{}")
    with pytest.raises(ValueError, match="where: 'inside'"):
        TapSpec(where="inside")


def test_the_command_reads_its_rate_and_tags_and_names_a_bad_one() -> None:
    assert parse_rate("100/s") == parse_rate("100") == 100.0
    assert parse_tags(["env:prod", "flag"]) == (("env", "prod"), ("flag", ""))
    with pytest.raises(TapArgumentError, match="--rate: '0/s'"):
        parse_rate("0/s")
    with pytest.raises(TapArgumentError, match="--tag: ':x' has no key"):
        parse_tags([":x"])


def test_a_point_publishes_only_while_a_tap_listens_and_at_most_its_rate() -> None:
    now = [1000.0]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    with tempfile.TemporaryDirectory(prefix="tap") as run:
        point = TapPoint(ctx, run, "receiver", clock=lambda: now[0])
        try:
            assert (Path(run) / "tap" / "receiver.sock").exists()
            assert point.specs() == []

            def look() -> list[Any]:
                now[0] += LOOK_EVERY_SECS  # past the pause between two looks
                return point.specs()
            sub = ctx.socket(zmq.SUB)
            spec = TapSpec(rate=3, nonce="x")
            sub.setsockopt(zmq.SUBSCRIBE, spec.topic())
            sub.connect(tap_endpoint(run, "receiver"))
            listening = wait_for(look, 5, "the subscription")
            assert [tap.spec for tap in listening] == [spec]
            tap = listening[0]
            now[0] = 2000.0  # the start of a second
            sent = 0
            while point.allowance(tap):
                point.publish(tap, {"n": sent})
                sent += 1
            assert sent == 3
            now[0] += 1  # the next second: its rate again
            assert point.allowance(tap) == 3
            got = [sub.recv_multipart() for _ in range(4)]
            # First the point's word that it listens (the tap says it taps from then on), then the metrics.
            assert got[0] == [spec.topic(), LISTENING, b"receiver"]
            assert [frames[0] for frames in got[1:]] == [spec.topic()] * 3
            sub.close(linger=0)
            wait_for(lambda: look() == [], 5, "the unsubscription of the tap that went")
        finally:
            point.close()
            ctx.term()
