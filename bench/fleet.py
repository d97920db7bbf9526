"""The fleet benchmark: what ``format: partials`` costs an edge, and how fast one fleet process merges.

In one process, no broker (so Kafka's own client costs are not in these figures):

1. **Edge cost**: one closed interval of ``--series`` random series (70 % counters, 15 % timers
   with 1 to 40 varying values, 10 % gauges, 5 % sets of 1 to 8 members), turned into partials
   (:func:`stages.aggregator.partials.partial_records`) against the same interval's aggregates
   encoded as ``json`` (the kafka sink's JSON records).
2. **Fleet merge rate**: ``--hosts`` edges' partials of one interval (each host its own random
   values of the same series), decoded and merged into one :class:`FleetBucket`, then its
   aggregates built. The target: 200,000 partials of one 10 s interval merged, and the interval's
   aggregates out, within the lateness window plus 2 s.
3. **Through a real broker** (``--broker``): the same partials produced into a topic of four
   partitions of the tests' KRaft broker during one 10 s interval, one fleet process (``pystatsd``
   under supervisord, one shard, its file sink) consuming them; what is measured is how long after
   the interval's end its aggregates are all written, against the lateness window plus 2 s.

    .venv/bin/python -m bench.fleet                      # 100 hosts x 2,000 series: 200,000 partials
    .venv/bin/python -m bench.fleet --broker             # and the same through the broker
    .venv/bin/python -m bench.fleet --hosts 10 --series 500 --rounds 1   # seconds
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

from stages.aggregator.fleet.bucket import FleetBucket
from stages.aggregator.partials import PartialSource, partial_records
from stages.aggregator.series import IntervalBucket, SeriesLimit
from stages.common import contract
from stages.common.model import MetricType, series_key
from stages.common.partial_bounds import PartialBounds
from stages.forwarder.encoders.json import JsonEncoder
from stages.forwarder.encoders.options import EncoderOptions

PERCENTILES = [50.0, 90.0, 95.0, 99.0]
INTERVAL = 10.0


def edge_bucket(series: int, rng: random.Random) -> tuple[IntervalBucket, dict]:
    """One edge's closed interval: random tags, varying values."""
    bucket = IntervalBucket(SeriesLimit(1_000_000, ("pystatsd_overflow", "true")), compiled=False)
    body = contract.BatchBody.empty()
    gauges = {}
    for i in range(series):
        key = series_key(f"svc.m{i % 200}", ("endpoint", f"e{i}", "region", f"r{i % 7}"))
        kind = i % 20
        if kind < 14:
            body.counters.extend((key, float(rng.randint(1, 1000))))
        elif kind < 17:
            values = [rng.lognormvariate(3, 1) for _ in range(rng.randint(1, 40))]
            body.sampled.extend((key, int(MetricType.TIMER), float(len(values)), contract.pack_values(values)))
        elif kind < 19:
            gauges[key] = [rng.uniform(0, 100), 9]
        else:
            body.sets.extend((key, [f"u{rng.randint(0, 10_000)}" for _ in range(rng.randint(1, 8))]))
    bucket.merge(body)
    bucket.close()
    return bucket, gauges


def edge_cost(series: int, rounds: int, rng: random.Random) -> tuple[float, float, int, int]:
    """Median ms to make the partials, and to encode the same interval's aggregates as json; their bytes."""
    bucket, gauges = edge_bucket(series, rng)
    source = PartialSource("edge-1", "0@1", PartialBounds())
    encoder = JsonEncoder(EncoderOptions())
    partial_ms, json_ms = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        records = partial_records(bucket, gauges, 100.0, INTERVAL, source)
        partial_ms.append((time.perf_counter() - started) * 1000)
        aggregates = bucket.aggregates(110.0, INTERVAL, PERCENTILES)
        started = time.perf_counter()
        encoded = [encoder.encode(a) for a in aggregates]
        lines = [record for records_of in encoded for record in records_of]
        json_ms.append((time.perf_counter() - started) * 1000)
    return (statistics.median(partial_ms), statistics.median(json_ms), sum(map(len, records[1::2])),
            sum(map(len, lines)))


def host_partials(hosts: int, series: int, start: float, rng: random.Random) -> list[tuple[bytes, bytes]]:
    """(key, value) of every host's partials of the interval at ``start``, as the edges' sinks send them."""
    records: list[tuple[bytes, bytes]] = []
    for host in range(hosts):
        bucket, gauges = edge_bucket(series, rng)
        flat = partial_records(bucket, gauges, start, INTERVAL, PartialSource(f"edge-{host}", "0@1", PartialBounds()))
        records.extend(zip(flat[0::2], flat[1::2], strict=True))
    return records


def merge_rate(hosts: int, series: int, rounds: int, rng: random.Random) -> tuple[float, float, int]:
    """Median partials merged per second (decode included), median ms to build the aggregates, partials."""
    values = [value for _, value in host_partials(hosts, series, 100.0, rng)]
    rates, build_ms = [], []
    for _ in range(rounds):
        fleet = FleetBucket()
        started = time.perf_counter()
        for value in values:
            fleet.merge(*contract.decode_partial(value))
        rates.append(len(values) / (time.perf_counter() - started))
        started = time.perf_counter()
        fleet.aggregates(110.0, INTERVAL, PERCENTILES)
        build_ms.append((time.perf_counter() - started) * 1000)
    return statistics.median(rates), statistics.median(build_ms), len(values)


def through_broker(hosts: int, series: int, lateness: float, rng: random.Random) -> tuple[int, float, float, float]:
    """Partials produced, seconds producing them, partials/s the fleet merged (from the first produced
    to its figures counting them all: figures come every 2 s, so a lower bound), and seconds from the
    interval's end until its aggregates were all written."""
    from kafka import KafkaProducer

    from harness.pipeline import Pipeline
    from harness.wait import wait_for
    from stages.rundir.figures import read_all
    from tests.kafka.broker import KafkaBroker, kafka_cache_dir

    broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="pstbench")), kafka_cache_dir() / "libs")
    broker.start()
    fleet = Pipeline({"input": {"kafka": {"kafka_broker": broker.bootstrap, "kafka_topic": "partials",
                                          "lateness_seconds": lateness}}, "self_metrics_prefix": ""},
                     shards=1, flush_interval=INTERVAL)
    try:
        broker.create_topic("partials", partitions=4)
        fleet.start()
        wait_for(lambda: "assigned (topic" in fleet.log("aggregator-0"), 60, "the fleet process to own the partitions")
        # The interval after the one under way: building the partials takes seconds.
        start = math.ceil(time.time() / INTERVAL) * INTERVAL + INTERVAL
        records = host_partials(hosts, series, start, rng)
        expected = len({key for key, _ in records})
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=256 * 1024,
                                 compression_type=None)
        if time.time() > start + 1:
            raise RuntimeError("building the partials took longer than the interval before theirs")
        time.sleep(max(0.0, start + 1 - time.time()))  # as edges do: at the start of the next one
        produce_started = time.time()
        for key, value in records:
            producer.send("partials", key=key, value=value)
        producer.flush()
        produce_secs = time.time() - produce_started
        producer.close()

        def merged() -> int:
            return int(read_all(fleet.run_dir).get("aggregator-0", {}).get("figures", {}).get("partials", 0))

        wait_for(lambda: merged() >= len(records), INTERVAL + 60, "the fleet process to merge every partial",
                 every=0.05)
        merge_rate = len(records) / (time.time() - produce_started)

        def written() -> bool:
            return sum(1 for a in fleet.aggregates() if a["name"].startswith("svc.")) >= expected

        wait_for(written, INTERVAL + lateness + 60, "the fleet aggregates of the interval", every=0.05)
        done = time.time()
        # Produced after the interval they describe had begun; the end is what the target counts from.
        return len(records), produce_secs, merge_rate, done - (start + INTERVAL)
    finally:
        fleet.stop()
        fleet.cleanup()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--series", type=int, default=2000, help="series per host")
    parser.add_argument("--edge-series", type=int, default=20_000, help="series of the edge-cost interval")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lateness", type=float, default=5.0, help="the window the target allows, seconds")
    parser.add_argument("--broker", action="store_true", help="also run the partials through a real broker")
    args = parser.parse_args(argv)
    rng = random.Random(1)
    partial_ms, json_ms, partial_bytes, json_bytes = edge_cost(args.edge_series, args.rounds, rng)
    print(f"edge, {args.edge_series:,} series: partials {partial_ms:.0f} ms ({partial_bytes / 1e6:.1f} MB), "
          f"json records {json_ms:.0f} ms ({json_bytes / 1e6:.1f} MB): {partial_ms / json_ms:.2f}x the json time")
    rate, build, partials = merge_rate(args.hosts, args.series, args.rounds, rng)
    merge_secs = partials / rate
    total = merge_secs + build / 1000
    print(f"fleet, {args.hosts} hosts x {args.series:,} series = {partials:,} partials: {rate:,.0f} partials/s "
          f"merged ({merge_secs:.2f} s), aggregates built in {build:.0f} ms")
    # Partials arrive over the interval; what must fit after its end is the last share plus the build.
    verdict = "met" if merge_secs < INTERVAL and build / 1000 < 2.0 else "missed"
    print(f"target (one interval's partials merged as they come, aggregates out within lateness + 2 s): {verdict} "
          f"({total:.2f} s of work per {INTERVAL:.0f} s interval)")
    if args.broker:
        produced, produce_secs, taken_rate, delay = through_broker(args.hosts, args.series, args.lateness, rng)
        print(f"through the broker: {produced:,} partials produced in {produce_secs:.1f} s, merged at "
              f"{taken_rate:,.0f} partials/s or more; aggregates all written {delay:.2f} s after the interval's end "
              f"(target: within {args.lateness:.0f} s + 2 s: {'met' if delay <= args.lateness + 2 else 'missed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
