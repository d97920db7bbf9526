"""Micro-benchmarks of the hot path beside its tests: the window (parse and accumulate) and the bucket (merge).

    .venv/bin/python -m tests.unit.parser_benchmarks                 # 20,000 and 100,000 series
    .venv/bin/python -m tests.unit.parser_benchmarks --series 5000 --datagrams 2000

The load is the benchmark's realistic mix, each line drawn afresh: half counters, 30 % timers with
long-tailed values, 15 % gauges, 5 % sets, three DogStatsD tags, 20 lines a datagram. It prints
nanoseconds per line for each implementation, compiled and Python. Figures for the whole pipeline
live in bench/RESULTS.md (make bench); these are for comparing two versions of the C or the Python.
"""

from __future__ import annotations

import argparse
import random
import time

from stages.aggregator.series import CompiledBucket, IntervalBucket, SeriesLimit
from stages.receiver.parsers import statsd_lines
from stages.receiver.window import CompiledWindow, PyWindow, Window

LINES_PER_DATAGRAM = 20
#: Payloads per feed call: what the receiver reads per wake-up.
BURST = 256
MAX_ENTRIES = 1000


def mix_line(rng: random.Random, series: int) -> str:
    """One line of the realistic mix."""
    i = rng.randrange(series)
    tags = f"|#env:prod,host:web{i % 97},route:/api/v{i % 13}"
    kind = rng.random()
    if kind < 0.5:
        return f"app.svc{i % 50}.c{i}:1|c{tags}"
    if kind < 0.8:
        return f"app.svc{i % 50}.t{i}:{rng.lognormvariate(3, 1):.2f}|ms{tags}"
    if kind < 0.95:
        return f"app.svc{i % 50}.g{i}:{rng.randrange(1000)}|g{tags}"
    return f"app.svc{i % 50}.s{i}:u{rng.randrange(5000)}|s{tags}"


def mix_datagrams(series: int, datagrams: int, seed: int = 1, per_datagram: int = LINES_PER_DATAGRAM) -> list[bytes]:
    rng = random.Random(seed)
    return ["\n".join(mix_line(rng, series) for _ in range(per_datagram)).encode() for _ in range(datagrams)]


#: The hostile mix's kinds of bad datagram, each as common as the others (one good line in five overall).
HOSTILE_KINDS = ("random bytes", "invalid UTF-8", "NaN or infinity", "deep JSON", "huge tag count")


def hostile_datagram(rng: random.Random, kind: str, series: int) -> bytes:
    """One bad datagram of ``kind`` (of HOSTILE_KINDS), most made from a good line of the mix."""
    good = mix_line(rng, series).encode()
    if kind == "random bytes":
        return rng.randbytes(rng.randint(1, 300))
    if kind == "invalid UTF-8":
        cut = rng.randrange(len(good))
        broken = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"])
        return good[:cut] + broken + good[cut:]
    if kind == "NaN or infinity":
        name, _, rest = good.partition(b":")
        value = rng.choice([b"nan", b"NaN", b"-inf", b"Infinity", b"1e400", b"-1e999"])
        return name + b":" + value + rest[rest.index(b"|"):]
    if kind == "deep JSON":
        depth = rng.choice([100, 1_000, 10_000])
        return rng.choice([b"[" * depth, b'{"a":' * (depth // 5 + 65), b"[" * depth + b"]" * depth])
    return good + b"," + b",".join(b"t%d:v" % i for i in range(rng.randint(65, 300)))


def hostile_datagrams(datagrams: int, seed: int = 1, series: int = 20_000) -> list[bytes]:
    """The hostile mix, a line a datagram: one good line of the realistic mix in five, the rest random
    bytes, invalid UTF-8, NaN and infinities, deep JSON (arrays and objects, 100 to 10,000 deep) and
    huge tag counts (65 to 300 tags), evenly."""
    rng = random.Random(seed)
    out = []
    for i in range(datagrams):
        if i % 5 == 0:
            out.append(mix_line(rng, series).encode())
        else:  # the bad kinds in turn
            out.append(hostile_datagram(rng, HOSTILE_KINDS[(i - i // 5 - 1) % len(HOSTILE_KINDS)], series))
    return out


def feed_all(window: Window, datagrams: list[bytes], window_entries: int) -> list[bytes]:
    """Every datagram through ``window``, taken whenever it holds ``window_entries``; the bodies made."""
    bodies: list[bytes] = []
    bad: dict[str, int] = {}
    for start in range(0, len(datagrams), BURST):
        window.feed(datagrams[start:start + BURST], 0, bad)
        if window.entries >= window_entries:
            bodies.extend(body for shard in window.take(MAX_ENTRIES) for body, *_ in shard)
    bodies.extend(body for shard in window.take(MAX_ENTRIES) for body, *_ in shard)
    return bodies


def benchmark(series: int, datagrams: int) -> dict[str, float]:
    """Nanoseconds per line of each implementation present."""
    load = mix_datagrams(series, datagrams)
    lines = len(load) * LINES_PER_DATAGRAM
    window_entries = 8 * MAX_ENTRIES  # what the receiver's batcher lets a one-shard window hold
    results = {}
    bodies: list[bytes] = []
    windows = {"window, compiled": CompiledWindow, "window, python": PyWindow}
    for label, window_type in windows.items():
        if window_type is None:
            continue
        window = window_type(1, (), statsd_lines({}))
        started = time.perf_counter()
        made = feed_all(window, load, window_entries)
        results[label] = (time.perf_counter() - started) / lines * 1e9
        bodies = bodies or made
    buckets = {"bucket merge, compiled": True, "bucket merge, python": False}
    for label, compiled in buckets.items():
        if compiled and CompiledBucket is None:
            continue
        bucket = IntervalBucket(SeriesLimit(series, ("pystatsd_overflow", "true")), compiled=compiled)
        started = time.perf_counter()
        for frame in bodies:
            bucket.merge_frame(frame)
        results[label] = (time.perf_counter() - started) / lines * 1e9
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, action="append", help="series to draw from (repeatable)")
    parser.add_argument("--datagrams", type=int, default=20_000)
    args = parser.parse_args()
    for series in args.series or [20_000, 100_000]:
        for label, nanoseconds in benchmark(series, args.datagrams).items():
            print(f"{series:>8,} series  {label:<24} {nanoseconds:8.0f} ns/line")


if __name__ == "__main__":
    main()
