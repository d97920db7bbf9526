"""A bounded stream of hostile datagrams through the running receiver: no stage falls over, nothing good is lost."""

from __future__ import annotations

import json
import random
import time

import pytest

from harness.pipeline import Pipeline, total
from harness.wait import wait_for

pytestmark = pytest.mark.fault

DATAGRAMS = 1_000_000
RATE_PER_SEC = 40_000
CANARY_EVERY = 500

CATALOGUE = [
    b"x:nan|c", b"x:inf|g", b"x:1e400|ms", b"x:1_000|c", b"x: 12 |c", b"x:0x10|c", b":1|c", b"x:1|c|@0",
    b"x:1|c|@-1", b"x:1|c|@1e-300", b"x:1|q", b"x:1", b"x", b"\xff\xfe\xfd", b"x:1|c|#" + b"t:v," * 200,
    b"[" * 50_000, b'{"metric_name": "a", "metric_type": "counter", "a": 1, "a": 2}', b'{"metric_name": 5}',
    b'{"metric_name": "a", "metric_type": "gauge", "value": 1' + b"0" * 5000 + b"}", b"\x00\x01\x02|c",
    b'{"metric_name": "a\\u0001", "metric_type": "trace"}', b"_e{1,1}:a|b", b"_sc|x|0", b"a" * 60_000 + b":1|c",
]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        position = rng.randrange(len(data) + 1)
        if choice < 0.4 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif choice < 0.7:
            data[position:position] = bytes(rng.choice(b":|@#,=\n{}[]\"0123456789.-+e") for _ in range(3))
        else:
            del data[position:position + rng.randint(1, 5)]
    return bytes(data)


def hostile_pool(rng: random.Random, size: int) -> list[bytes]:
    statsd = [b"a.b:1|c|#k:v", b"t:12.5|ms|@0.5", b"g:-3|g", b"s:joe|s", b"d:1:2:3|d|#x"]
    objects = [json.dumps({"metric_name": "j", "metric_type": t, "value": 1, "tag": "v"}).encode()
               for t in ("counter", "guage", "trace", "timer", "set")]
    pool = []
    for i in range(size):
        kind = i % 10
        if kind < 4:
            pool.append(mutate(rng, b"\n".join(rng.sample(statsd, 3))))
        elif kind < 7:
            pool.append(mutate(rng, rng.choice(objects)))
        elif kind < 9:
            pool.append(rng.randbytes(rng.randint(1, 300)))
        else:
            pool.append(rng.choice(CATALOGUE))
    return pool


def test_a_million_hostile_datagrams_break_nothing() -> None:
    pipeline = Pipeline()
    try:
        pipeline.start()
        pids = {name: pid for name, (_, pid) in pipeline.status().items()}
        pool = hostile_pool(random.Random(1234), 5_000)
        started = time.monotonic()
        canaries = 0
        for i in range(DATAGRAMS):
            if i % CANARY_EVERY == 0:
                pipeline.send(b"fuzz.canary:1|c", pipeline.statsd_port)
                canaries += 1
            pipeline.send(pool[i % len(pool)], pipeline.statsd_port)
            if i % 1000 == 0:
                ahead = started + i / RATE_PER_SEC - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        sent = DATAGRAMS + canaries
        accounted = wait_for(
            lambda: (total(pipeline.series("pystatsd.receiver.datagrams"))
                     + total(pipeline.series("pystatsd.receiver.kernel_drops"))) >= sent and pipeline.aggregates(),
            20, "the receiver to account for every datagram")
        assert accounted
        # Stragglers: a batch read before the count was reported may land in the next interval.
        last = max(a["timestamp"] for a in pipeline.aggregates())
        wait_for(lambda: pipeline.shards_flushed_after(last + pipeline.flush_interval), 10,
                 "every shard to flush two more intervals")
        read = total(pipeline.series("pystatsd.receiver.datagrams"))
        dropped_by_kernel = total(pipeline.series("pystatsd.receiver.kernel_drops"))
        assert read + dropped_by_kernel == sent
        # Every canary the kernel let through is delivered once: at most the counted kernel drops are
        # missing (the drops are counted per socket, not per datagram), and none is counted twice.
        assert canaries - dropped_by_kernel <= total(pipeline.series("fuzz.canary")) <= canaries
        assert total(pipeline.series("pystatsd.receiver.bad_lines")) > DATAGRAMS // 4
        assert {name: pid for name, (_, pid) in pipeline.status().items()} == pids, "a stage restarted"
        for program in ("receiver", "aggregator-0", "aggregator-1", "forwarder"):
            log = pipeline.log(program)
            assert "Traceback" not in log
            assert all(len(line) <= 1024 for line in log.splitlines()), f"{program} logged an over-long line"
    finally:
        pipeline.stop()
        pipeline.cleanup()
