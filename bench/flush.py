"""The flush benchmark: how long a shard takes to flush 100,000 live series, and how soon they are written.

The issue's target: with 100,000 live series (10,000 of them timers with 100 samples each) a
shard's flush takes at most 150 ms and adds no loss; aggregates leave the forwarder within 1 s of
the interval end.

It starts the real pipeline under supervisord with a file sink (harness/pipeline.py's Pipeline) and,
in every interval, offers each series from Python at a paced rate: 90,000 counters once and 10,000
timers 100 times, 1,090,000 samples in datagrams of 20 lines. For every shard and interval it
reports the shard's own ``pystatsd.aggregator.flush_ms`` gauge (building the aggregates) and the
wall time from the interval end until the file sink had written the last aggregate of that shard's
flush (seen by watching the file grow: the lines carry the interval end, not when they were
written). It checks that every counter sums to what was sent, that every timer counts its samples,
and that pystatsd's own loss counters stay 0. The first interval with load warms the receiver's
line cache and the shards' allocations; it is shown but left out of the medians. Each row also says
how much of the machine other processes took while that flush was built and written, since on a
shared machine a slow flush then says little about pystatsd.

From the repo root (bench/ and harness/ are imported from there):

    .venv/bin/python -m bench.flush                    # about a minute: 1 warm-up and 4 measured intervals
    .venv/bin/python -m bench.flush --smoke            # seconds, few series; exit 1 if anything was lost
    .venv/bin/python -m bench.flush --shards 4 --flush-interval 5 --json flush.json

Exits 1 when anything was lost; a missed time target shows in the verdict line only.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import os
import platform
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bench import procstat
from bench.report import table
from bench.run import command_line, exit_on_sigterm
from bench.systems import SELF_PREFIX, AggregateTally
from bench.tally import LOAD_PREFIX
from harness.pipeline import Pipeline
from stages.aggregator.shard import FLUSH_GRACE_SECS
from stages.common.sharding import shard_for

log = logging.getLogger("bench.flush")

COUNTER_PREFIX = f"{LOAD_PREFIX}flush.c"
TIMER_PREFIX = f"{LOAD_PREFIX}flush.t"
FLUSH_TARGET_MS = 150.0
DELIVERY_TARGET_MS = 1000.0
#: The load of an interval is sent between these fractions of it: clear of the edges, so that no
#: datagram still queued in the kernel at the edge is stamped with the next interval.
SEND_FROM, SEND_UNTIL = 0.02, 0.92
#: How often the output file's size is looked at: the precision of the delivery latency.
WATCH_EVERY_SECS = 0.005
#: How long the file must stay the same size before the last measured flush counts as written.
QUIET_SECS = 0.5
SMOKE = {"counters": 1_800, "timers": 200, "flush_interval": 1.0, "intervals": 2}
FULL = {"counters": 90_000, "timers": 10_000, "flush_interval": 10.0, "intervals": 4}


@dataclass
class ShardFlush:
    """One shard's flush of one interval, as read back from the file sink."""

    interval: int
    shard: int
    warmup: bool
    #: samples of the load's names on this shard that were sent in the interval
    expected: float
    interval_end: float
    series: float | None = None
    flush_ms: float | None = None
    #: unix time at which the file held this flush's last line
    written_at: float | None = None
    counter_sum: float = 0.0
    timer_samples: float = 0.0
    #: share of the machine's cores other processes took (user mode) from the interval end to the next one
    others_cpu_pct: float | None = None

    @property
    def latency_ms(self) -> float | None:
        return None if self.written_at is None else (self.written_at - self.interval_end) * 1000

    @property
    def missing(self) -> float:
        return self.expected - self.counter_sum - self.timer_samples


@dataclass
class Load:
    """The same series every interval: each counter once with 1, each timer ``samples`` times."""

    counters: int
    timers: int
    samples: int
    per_datagram: int
    shards: int
    datagrams: list[bytes] = field(default_factory=list)
    #: shard → samples of the load's names it owns, per interval
    owned: Counter[int] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        # Timer samples interleave with slices of the counters, so every timer's samples spread over
        # the whole interval as they would from a fleet of clients.
        per_round = -(-self.counters // self.samples)
        lines: list[str] = []
        for r in range(self.samples):
            lines.extend(f"{COUNTER_PREFIX}{i}:1|c"
                         for i in range(r * per_round, min(self.counters, (r + 1) * per_round)))
            lines.extend(f"{TIMER_PREFIX}{i}:{r}|ms" for i in range(self.timers))
        self.datagrams = ["\n".join(lines[start:start + self.per_datagram]).encode()
                          for start in range(0, len(lines), self.per_datagram)]
        self.owned.update(shard_for(f"{COUNTER_PREFIX}{i}", self.shards) for i in range(self.counters))
        for i in range(self.timers):
            self.owned[shard_for(f"{TIMER_PREFIX}{i}", self.shards)] += self.samples

    @property
    def per_interval(self) -> int:
        return self.counters + self.timers * self.samples


class FileWatch:
    """The time at which the output file reached each size it grew to, noted by :func:`watching`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sizes: list[int] = [0]
        self.times: list[float] = [0.0]

    def look(self) -> None:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        if size > self.sizes[-1]:
            self.sizes.append(size)
            self.times.append(time.time())

    def last_growth(self) -> float:
        return self.times[-1]

    def written_at(self, end_offset: int) -> float:
        """When the file first held ``end_offset`` bytes (the watch's last look saw the whole file)."""
        return self.times[bisect.bisect_left(self.sizes, end_offset)]


@contextmanager
def watching(path: Path) -> Iterator[FileWatch]:
    """Watches ``path`` from a thread until the block ends."""
    watch = FileWatch(path)
    done = threading.Event()

    def loop() -> None:
        while not done.wait(WATCH_EVERY_SECS):
            watch.look()

    thread = threading.Thread(target=loop, name="file-watch", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        done.set()
        thread.join()
        watch.look()


class Reading(NamedTuple):
    """User-mode CPU seconds so far: of every core, and of the pipeline and this benchmark."""

    at: float
    cores: float
    own: float


def read_cpu(pids: list[int]) -> Reading:
    own = sum(procstat.user_cpu_seconds(pid) for pid in pids) + os.times().user
    return Reading(time.monotonic(), procstat.cores_user_seconds(list(range(os.cpu_count() or 1))), own)


def others_cpu_pct(before: Reading, after: Reading) -> float:
    """What processes other than the pipeline and this benchmark took of the machine: on a shared machine,
    a slow flush in an interval where they took a core says little about pystatsd."""
    others = (after.cores - before.cores) - (after.own - before.own)
    return 100 * max(0.0, others) / ((after.at - before.at) * (os.cpu_count() or 1))


def sleep_until(when: float) -> None:
    delay = when - time.time()
    if delay > 0:
        time.sleep(delay)


def offer(pipeline: Pipeline, datagrams: list[bytes], start: float, end: float) -> float:
    """Sends ``datagrams`` evenly paced between the unix times ``start`` and ``end``; returns when the last left."""
    rate = len(datagrams) / (end - start)
    sleep_until(start)
    sent = 0
    while sent < len(datagrams):
        due = min(len(datagrams), int((time.time() - start) * rate) + 1)
        for datagram in datagrams[sent:due]:
            pipeline.send(datagram, pipeline.statsd_port)
        sent = max(sent, due)
        time.sleep(0.001)
    return time.time()


def shard_of(aggregate: dict[str, Any], shards: int) -> int | None:
    """The shard whose flush carried ``aggregate``; None for the forwarder's own metrics."""
    name = aggregate["name"]
    if name.startswith(f"{SELF_PREFIX}forwarder."):
        return None
    if name.startswith(f"{SELF_PREFIX}aggregator."):
        return int(aggregate["tags"]["shard"])
    return shard_for(name, shards)


def read_back(path: Path, watch: FileWatch, flushes: dict[tuple[int, int], ShardFlush], load: Load,
              interval: float) -> tuple[AggregateTally, Counter[str]]:
    """Fills ``flushes`` from the file sink's output; returns the tally of the whole run and each timer's
    samples over the whole run (a sample the receiver read after its interval's end is counted in the
    next interval: moved, not lost)."""
    tally = AggregateTally()
    timer_samples: Counter[str] = Counter()
    offset = 0
    with open(path, "rb") as handle:
        for line in handle:
            offset += len(line)
            aggregate = json.loads(line)
            tally.add(aggregate)
            if aggregate["name"].startswith(TIMER_PREFIX):
                timer_samples[aggregate["name"]] += aggregate["stats"]["count"]
            shard = shard_of(aggregate, load.shards)
            flush = flushes.get((round(aggregate["timestamp"] / interval) - 1, shard)) if shard is not None else None
            if flush is None:
                continue
            flush.written_at = max(flush.written_at or 0.0, watch.written_at(offset))
            name = aggregate["name"]
            if name == f"{SELF_PREFIX}aggregator.flush_ms":
                flush.flush_ms = aggregate["value"]
            elif name == f"{SELF_PREFIX}aggregator.series":
                flush.series = aggregate["value"]
            elif name.startswith(COUNTER_PREFIX):
                flush.counter_sum += aggregate["value"]
            elif name.startswith(TIMER_PREFIX):
                flush.timer_samples += aggregate["stats"]["count"]
    return tally, timer_samples


def run(args: argparse.Namespace, load: Load) -> tuple[list[ShardFlush], AggregateTally, int]:
    """Offers the load for the warm-up and measured intervals; returns every flush, the run's tally and
    the timers whose samples over the run are not all that were sent."""
    interval = args.flush_interval
    flushes: dict[tuple[int, int], ShardFlush] = {}
    #: interval index → the reading at its start
    readings: dict[int, Reading] = {}
    with Pipeline(shards=args.shards, flush_interval=interval) as pipeline:
        pids = [pid for _, pid in pipeline.status().values() if pid]
        pids.append(int((pipeline.run_dir / "supervisord.pid").read_text()))
        with watching(pipeline.out_path) as watch:
            first = int(time.time() // interval) + 1  # the partial interval running now is skipped
            for k in range(first, first + args.warmup + args.intervals):
                log.info("interval %d of %d: offering %d samples in %d datagrams", k - first + 1,
                         args.warmup + args.intervals, load.per_interval, len(load.datagrams))
                start, end = k * interval, (k + 1) * interval
                sleep_until(start)
                readings[k] = read_cpu(pids)
                done = offer(pipeline, load.datagrams, start + SEND_FROM * interval, start + SEND_UNTIL * interval)
                if done > end:
                    log.warning("the sender fell behind: the interval's last datagram left %.0f ms after its end",
                                (done - end) * 1000)
                for shard in range(args.shards):
                    flushes[(k, shard)] = ShardFlush(k, shard, k < first + args.warmup, load.owned[shard], end)
            # twice the target for the last flush to be written, and longer while the file still grows;
            # one that comes later still is written (and timed) during the stop below
            written_by = end + 2 * DELIVERY_TARGET_MS / 1000
            sleep_until(end)
            readings[k + 1] = read_cpu(pids)
            sleep_until(written_by)
            while time.time() - watch.last_growth() < QUIET_SECS and time.time() < written_by + interval:
                time.sleep(0.1)
            readings[k + 2] = read_cpu(pids)
            # a planned stop hands on every open interval and counter, so the loss counters are complete
            pipeline.stop()
        tally, timer_samples = read_back(pipeline.out_path, watch, flushes, load, interval)
    for (k, _), flush in flushes.items():
        flush.others_cpu_pct = others_cpu_pct(readings[k + 1], readings[k + 2])
    sent_each = (args.warmup + args.intervals) * load.samples
    short_timers = sum(timer_samples[f"{TIMER_PREFIX}{i}"] != sent_each for i in range(load.timers))
    return list(flushes.values()), tally, short_timers


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def figures(rows: list[ShardFlush], attr: str) -> list[float | None]:
    return [getattr(row, attr) for row in rows]


def median(values: list[float | None]) -> float | None:
    """The median of the values that were read back; None when none was."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def worst(values: list[float | None]) -> float | None:
    """The largest value; None when one was never read back (that flush is missing: the worst of all)."""
    known = [value for value in values if value is not None]
    return max(known) if known and len(known) == len(values) else None


def summarize(args: argparse.Namespace, flushes: list[ShardFlush], tally: AggregateTally, sent: int,
              short_timers: int) -> dict[str, Any]:
    """Medians, worst cases and the verdict, as printed and as written with --json."""
    measured = [row for row in flushes if not row.warmup]
    per_shard = {shard: [row for row in measured if row.shard == shard] for shard in range(args.shards)}
    delivered = tally.delivered
    losses = {name: value for name, value in tally.losses.items() if value}
    # samples the receiver read after their interval's end, counted in the next one: moved, not lost
    moved = sum(max(0.0, row.missing) for row in flushes)
    worst_flush = worst(figures(measured, "flush_ms"))
    worst_latency = worst(figures(measured, "latency_ms"))
    return {
        "medians": {shard: {"flush_ms": median(figures(rows, "flush_ms")),
                            "latency_ms": median(figures(rows, "latency_ms"))} for shard, rows in per_shard.items()},
        "worst_flush_ms": worst_flush,
        "worst_latency_ms": worst_latency,
        "sent": sent,
        "delivered": delivered,
        "loss_counters": losses,
        "short_timers": short_timers,
        "moved_to_next_interval": moved,
        "flush_met": worst_flush is not None and worst_flush <= FLUSH_TARGET_MS,
        "delivery_met": worst_latency is not None and worst_latency <= DELIVERY_TARGET_MS,
        "lossless": delivered == sent and not losses and not short_timers,
    }


def report(args: argparse.Namespace, load: Load, flushes: list[ShardFlush], summary: dict[str, Any]) -> str:
    rows = [[time.strftime("%H:%M:%S", time.localtime(row.interval_end)) + (" (warm-up)" if row.warmup else ""),
             str(row.shard),
             fmt(row.series), fmt(row.flush_ms, 1), fmt(row.latency_ms), fmt(row.missing),
             fmt(row.others_cpu_pct)]
            for row in sorted(flushes, key=lambda r: (r.interval, r.shard))]
    lines = [f"flush: {load.counters:,} counters + {load.timers:,} timers x {load.samples} samples per "
             f"{args.flush_interval:g} s interval, {args.shards} shards, {load.per_datagram} lines per datagram", ""]
    lines += table(["interval end", "shard", "series flushed", "flush_ms", "last written after end (ms)",
                    "samples not in it", "others' CPU %"], rows)
    lines.append("")
    for shard, medians in summary["medians"].items():
        lines.append(f"median shard {shard}: flush_ms {fmt(medians['flush_ms'], 1)}, "
                     f"last aggregate written {fmt(medians['latency_ms'])} ms after the interval end")
    lost = summary["sent"] - summary["delivered"]
    loss = ("none" if summary["lossless"] else
            f"{lost:,.0f} samples, {summary['short_timers']} timers short, counters {summary['loss_counters']}")
    lines.append(
        f"verdict: flush worst {fmt(summary['worst_flush_ms'], 1)} ms vs {FLUSH_TARGET_MS:.0f} ms "
        f"{'met' if summary['flush_met'] else 'MISSED'}; delivery worst {fmt(summary['worst_latency_ms'])} ms vs "
        f"{DELIVERY_TARGET_MS:.0f} ms {'met' if summary['delivery_met'] else 'MISSED'} "
        f"(includes the shards' {FLUSH_GRACE_SECS * 1000:.0f} ms grace); loss: {loss}")
    if summary["moved_to_next_interval"]:
        lines.append(f"{summary['moved_to_next_interval']:,.0f} samples were read after their interval's end and "
                     "are counted in the next one (late, not lost)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counters", type=int, help=f"counter series (default {FULL['counters']:,})")
    parser.add_argument("--timers", type=int, help=f"timer series (default {FULL['timers']:,})")
    parser.add_argument("--samples", type=int, default=100, help="samples per timer per interval")
    parser.add_argument("--per-datagram", type=int, default=20, help="lines per datagram")
    parser.add_argument("--flush-interval", type=float, help=f"seconds (default {FULL['flush_interval']:g})")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--intervals", type=int, help=f"measured intervals (default {FULL['intervals']})")
    parser.add_argument("--warmup", type=int, default=1, help="intervals with load before the measured ones")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE['counters']:,} counters and {SMOKE['timers']} timers, 1 s intervals, seconds")
    parser.add_argument("--json", type=Path, help="also write every figure here as JSON")
    args = parser.parse_args(argv)
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.samples, args.per_datagram, args.intervals, args.shards) < 1 or args.counters + args.timers < 1:
        parser.error("--samples, --per-datagram, --intervals and --shards must be at least 1, and there must be series")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    load = Load(args.counters, args.timers, args.samples, args.per_datagram, args.shards)
    load_before = os.getloadavg()
    flushes, tally, short_timers = run(args, load)
    summary = summarize(args, flushes, tally, (args.warmup + args.intervals) * load.per_interval, short_timers)
    print(report(args, load, flushes, summary), flush=True)
    if args.json:
        meta = {"command": command_line("bench.flush", sys.argv[1:] if argv is None else argv), "nproc": os.cpu_count(),
                "python": platform.python_version(), "load_average_before": load_before,
                "load_average_after": os.getloadavg(), **{key: getattr(args, key) for key in
                ("counters", "timers", "samples", "per_datagram", "flush_interval", "shards", "intervals", "warmup")}}
        rows = [{**asdict(row), "latency_ms": row.latency_ms, "missing": row.missing} for row in flushes]
        args.json.write_text(json.dumps({"meta": meta, "flushes": rows, **summary}, indent=1))
    return 0 if summary["lossless"] else 1


if __name__ == "__main__":
    sys.exit(main())
