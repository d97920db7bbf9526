"""The benchmark: pystatsd and its peers under the same paced UDP load, verified end to end.

The headline is the realistic mix (bench/loadgen.c --mode mix): every line drawn afresh, half
counters, 30 % timers with long-tailed values, 15 % gauges and 5 % sets, each series a name with three
DogStatsD tags, over 20,000 series with a 10 s flush, at 20 lines and at 1 line per datagram; then
the same over 100,000 series, and with a 1 s flush. pystatsd, Etsy statsd (as shipped and tuned),
Telegraf's statsd input and statsd_exporter run in the same sweep. The repeated-counter load of the
earlier sweeps (1,000 counter series, 1 s flush) follows as a secondary section, pystatsd only unless
--systems says otherwise. Every system gets one core, the load generator the other.

For every system and load it searches the highest offered rate whose loss stays under 0.1 %: one run
per rate, stepping from a start rate (by 2×, or by √2 from an earlier load's result) until one rate
passes and the next fails, bisecting between them, then confirming the highest pass (a failed
confirmation moves the result down). Under a 10 s flush the confirmation is one run over a whole
flush interval, aligned to the system's flushes, whose figures are the point's: a 3 s run shares one
or two flushes among 3 s of data, several times the flush cost per metric of a steady load; under a
1 s flush it is more short runs, the median of --repeats deciding. A run passes when its loss is under
0.1 % and the system had worked off what it was sent within a second of the load's end. Loss is judged on
what a statsd daemon must deliver exactly: loss = 1 - delivered / sent, counting counter increments
plus timer samples (the sum of every counter aggregate's value and of every timer aggregate's count
of the load's names, at the system's output; gauges and sets have no total to check). After the
load the runner waits for the system's flush: until everything sent arrived, or until a heartbeat
gauge, sent once the system had read everything, arrived too. It reads CPU seconds and peak RSS of
every process from /proc, and where loss happened: the kernel's drops on the receiving socket
(/proc/net/udp) and the systems' own loss counters. The systems run side by side and take turns
run by run; a run during which other processes took the systems' core is repeated. Then it scales
pystatsd over shard and receiver counts, measures idle CPU and memory with 1,000 series, and writes
a report and a plot.

Beside pystatsd runs pystatsd-rules: the same pipeline with the rule file of a web service plus Airflow
(bench/rules.yaml and the statsd_exporter mapping file it names, 50 rules; its header says which share
of the mix each rule renames, re-tags or drops). It runs under the headline load (and the smoke load)
unless --systems names it, taking turns with pystatsd run by run, so the report puts its rate beside
the plain one, and their ratio. What it delivered counts the items renamed (under their new names) and
those its rules dropped (the receiver's rule_dropped), so its loss is judged as exactly as any other's.
pystatsd-sinks and pystatsd-relay run the same way: the pipeline with every sink issue 26 added on beside
its file sink, each to its real server on loopback (bench/destinations.py; delivery is counted at the
file sink, and once the load is over each server's holdings are read back and held to the file sink's
total), and the pipeline relaying every line to a UDP socket nothing reads.

From the repo root (bench/ and harness/ are imported from there):

    .venv/bin/python -m bench.run                      # the full sweep (make bench); writes bench/RESULTS.md
    .venv/bin/python -m bench.run --quick              # the two headline loads, one confirmation each
    .venv/bin/python -m bench.run --smoke              # seconds per system: one low-rate run of the mix
    .venv/bin/python -m bench.run --loads mix-20-1s --systems pystatsd,telegraf
    .venv/bin/python -m bench.run --systems pystatsd,etsy-tuned --per-datagram 20 --rates 400k,566k
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import peers, procstat, report
from bench.results import (
    HEADLINE,
    LOADS,
    BenchResults,
    DestinationCheck,
    IdleResult,
    Load,
    RatePoint,
    RunResult,
    highest_pass,
)
from bench.systems import (
    PYSTATSD_RULES,
    VARIANTS,
    PeerSystem,
    PystatsdSystem,
    System,
    send_heartbeat,
    send_series_once,
    udp_backlog,
    udp_drops,
)
from bench.tally import Totals
from harness.paths import REPO
from harness.proc_status import peak_rss_kib
from tests.sinks.servers import settled

ALL_SYSTEMS = ("pystatsd", *VARIANTS, "etsy", "etsy-tuned", "telegraf", "statsd_exporter")
QUICK_LOADS = ("mix-20", "mix-1")
#: What the repeated-counter loads run by default: they compare pystatsd with its earlier figures.
COUNTERS_SYSTEMS = ("pystatsd",)
#: The smoke run checks correctness: few enough series and a rate low enough that Etsy statsd as shipped
#: (a 208 KiB receive buffer, under 100 datagrams of 20 lines) loses nothing while it flushes. On a machine
#: busy enough to deschedule it for longer its socket overflows, which smoke_verdict tells apart.
SMOKE_LOAD = Load("smoke", "mix", 20, 2_000, 1.0)
#: The loads pystatsd's variants (pystatsd-rules, -sinks, -relay) run unless --systems names them: what each
#: costs is one ratio, the headline's.
VARIANT_LOADS = ("mix-20", SMOKE_LOAD.name)
#: Where a search starts, per (mode, lines per datagram) and system: near where the systems pass here,
#: so few steps are spent getting there (a start that fails steps down). pystatsd's repeated-counter
#: starts are 0.9× its previous figures (1,600,000 and 516,000/s), the target's threshold.
START_RATES: dict[tuple[str, int], dict[str, float]] = {
    ("mix", 20): {"pystatsd": 600_000, "etsy": 100_000, "etsy-tuned": 150_000, "telegraf": 150_000,
                  "statsd_exporter": 300_000},
    ("mix", 1): {"pystatsd": 200_000, "etsy": 40_000, "etsy-tuned": 60_000, "telegraf": 60_000,
                 "statsd_exporter": 60_000},
    ("counters", 20): {"pystatsd": 1_440_000, "etsy": 168_000, "etsy-tuned": 238_000, "telegraf": 250_000,
                       "statsd_exporter": 400_000},
    ("counters", 1): {"pystatsd": 464_000, "etsy": 68_000, "etsy-tuned": 113_000, "telegraf": 100_000,
                      "statsd_exporter": 190_000},
}
#: Loads whose search starts from a load measured before it: that load's highest pass times a factor,
#: stepping by √2 with one bisection fewer (the same resolution from a closer start).
START_FROM = {"mix-1": ("mix-20", 0.4), "mix-20-100k": ("mix-20", 0.8), "mix-20-1s": ("mix-20", 1.0)}
STEP = 2.0
CLOSE_STEP = math.sqrt(2.0)
#: Below this the search gives up looking for a passing rate.
MIN_RATE = 1_000
SMOKE_RATE = 10_000
RSS_SERIES = 1_000
#: Idle CPU is measured with this flush interval (a flush every second: the most flush work).
IDLE_FLUSH_INTERVAL = 1.0
#: How long check_destinations waits for a system's other destinations to hold what its counted output does
#: (VictoriaMetrics makes a write searchable a moment later; a sink may be retrying).
DESTINATIONS_SECS = 30.0
#: Disturbed runs repeated at most, over the whole benchmark.
MAX_REPEATED_RUNS = 20
#: Systems started for a load get this long before its first run: their start-up work (imports,
#: first flush) would otherwise count against the first runs.
WARMUP_SECS = 3.0
#: pystatsd-rules asks its rules once per series it has not seen (some 10 µs each, in Python): the mix's
#: 20,000 series at once would take 0.2 s of the receiver at the start of its first run, a burst no steady
#: load pays. Before its first run, and after each restart, it gets the load at this rate for this long
#: (every series seen, all but surely), and the runner waits for that to be delivered.
RULES_WARM_RATE = 100_000
RULES_WARM_SECS = 2.0
#: settle(): how a system counts as idle (CPU under this share of a core over a look, nothing queued,
#: for IDLE_SECS), and how long its delivered total must then stay the same once complete.
IDLE_CPU_SHARE = 0.3
IDLE_SECS = 0.3
STABLE_SECS = 0.3
#: Once the heartbeat arrived, the rest of that flush (another shard's, say) gets this long.
HEARTBEAT_STABLE_SECS = 1.0
#: A whole-interval run (the confirmation under a flush interval longer than a run) starts this long
#: after one of the system's flush boundaries and ends this long before the next: all its data goes out
#: in one flush, about as much per flush as a steady load at that rate makes, and the system is found
#: caught up (or not) before that flush's own CPU could count as catching up.
WHOLE_START_AFTER_S = 0.3
WHOLE_END_BEFORE_S = 1.5
#: The load generator renders a run's lines before it sends them (about 0.1 µs a line here): it is
#: started this much ahead, plus that.
RENDER_LEAD_S = 0.5
RENDER_SECS_PER_LINE = 2e-7

#: One value per heartbeat, growing over the whole benchmark.
_heartbeats = itertools.count(1)


@dataclass
class CpuReading:
    """CPU time so far of the system's processes and of the cores they run on."""

    at: float
    cpu: dict[str, float]
    #: user-mode seconds of the system's cores, of the system's processes and the helpers it needs (its
    #: servers: neither its cost nor another's disturbance), and of this runner
    cores_user: float
    system_user: float
    runner_user: float

    @property
    def total(self) -> float:
        return sum(self.cpu.values())


@dataclass
class Reading:
    """One look at a running system and the cores it runs on; every figure is cumulative."""

    cpu: CpuReading
    drops: int
    totals: Totals
    losses: dict[str, float]


@dataclass
class Plan:
    """What every run shares."""

    duration: float
    repeats: int
    load_cpu: int
    system_cpus: list[int]
    workdir: Path
    #: the load generator's source sockets, for every system and run alike
    client_sockets: int = 8
    #: A run where every metric must arrive (the smoke run): once the heartbeat is in, the total must
    #: also hold still over a whole flush interval, so metrics a busy machine delayed into the next
    #: interval are counted before the run is judged.
    exact: bool = False


def read_cpu(system: System, cpus: list[int]) -> CpuReading:
    pids = system.stage_pids()
    return CpuReading(
        at=time.monotonic(),
        cpu={stage: procstat.cpu_seconds(pid) for stage, pid in pids.items()},
        cores_user=procstat.cores_user_seconds(cpus),
        system_user=sum(procstat.user_cpu_seconds(pid) for pid in [*pids.values(), *system.helper_pids()]),
        runner_user=os.times().user,
    )


def read_system(system: System, cpus: list[int], cpu_first: bool) -> Reading:
    """Reading the output can cost the system CPU (statsd_exporter renders every series per scrape):
    a run's first reading takes the CPU figures last and its last one first, so no reading's own cost
    falls inside the run."""
    cpu = read_cpu(system, cpus) if cpu_first else None
    totals, losses = system.read()
    return Reading(cpu or read_cpu(system, cpus), udp_drops(system), totals, losses)


def foreign_share(before: CpuReading, after: CpuReading, cpus: list[int]) -> float:
    """The share of the system's cores that processes other than the system and this runner took, in
    user mode (what other engineers' tests mostly are)."""
    own = after.system_user - before.system_user + after.runner_user - before.runner_user
    foreign = after.cores_user - before.cores_user - own
    return max(0.0, foreign) / ((after.at - before.at) * len(cpus))


def settle_timeout(flush_interval: float) -> float:
    """Up to two flushes (Telegraf aggregates, then writes) past the end of a load, with room to spare."""
    return max(30.0, 3 * flush_interval + 10)


def wait_idle(system: System, cpus: list[int], timeout: float) -> float:
    """Waits until the system has read everything: nothing queued on its sockets and its processes idle
    for IDLE_SECS (a queue inside the system drains with CPU). Returns when that idle time began (a look
    earlier than the first look that found it idle), or when it gave up: a system never idle that long
    is taken as it is after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = read_cpu(system, cpus)
    idle_since: float | None = None
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read_cpu(system, cpus)
        busy = now.total - last.total > IDLE_CPU_SHARE * (now.at - last.at) or udp_backlog(system)
        idle_since = None if busy else (last.at if idle_since is None else idle_since)
        last = now
        if idle_since is not None and now.at - idle_since >= IDLE_SECS:
            return idle_since
    return time.monotonic()


@dataclass
class Settled:
    """How a run ended: whether the system delivered before the timeout, the reading that showed it, and
    how long after the load it had processed everything."""

    settled: bool
    reading: Reading
    catch_up_s: float


def settle(system: System, expected: float, flush_interval: float, cpus: list[int], exact: bool = False) -> Settled:
    """Waits until the system delivered what it was sent: a delivered total of ``expected``, or the
    heartbeat sent once it had read everything (what it has not delivered by then it lost), and the total
    held still a moment after (the rest of the flush is written)."""
    started = time.monotonic()
    deadline = started + settle_timeout(flush_interval)
    heartbeat_stable = max(HEARTBEAT_STABLE_SECS, flush_interval + 1.0) if exact else HEARTBEAT_STABLE_SECS
    catch_up = wait_idle(system, cpus, flush_interval + 5) - started
    heartbeat = next(_heartbeats)
    send_heartbeat(system, heartbeat)
    last = read_system(system, cpus, cpu_first=True)
    changed_at = last.cpu.at
    while True:
        time.sleep(system.poll_secs)
        reading = read_system(system, cpus, cpu_first=True)
        now = reading.cpu.at
        if reading.totals.delivered != last.totals.delivered:
            changed_at = now
        last = reading
        still = now - changed_at
        if reading.totals.delivered >= expected and still >= STABLE_SECS:
            return Settled(True, reading, catch_up)
        if reading.totals.heartbeat >= heartbeat and still >= heartbeat_stable:
            return Settled(True, reading, catch_up)
        if now >= deadline:
            return Settled(False, reading, catch_up)


def whole_interval(system: System, load: Load, rate: float) -> tuple[float, float]:
    """When a whole-interval run starts (unix time) and how long it lasts: from just after the system's next
    flush boundary, far enough off for the generator to render the run, to just before the one after.
    A system without flushes (statsd_exporter) starts when the generator is ready."""
    interval = load.flush_interval
    duration = interval - WHOLE_START_AFTER_S - WHOLE_END_BEFORE_S
    ready = time.time() + RENDER_LEAD_S + RENDER_SECS_PER_LINE * rate * duration
    phase = system.flush_phase()
    if phase is None:
        return ready, duration
    boundary = phase + math.ceil((ready - WHOLE_START_AFTER_S - phase) / interval) * interval
    return boundary + WHOLE_START_AFTER_S, duration


def measure_run(system: System, plan: Plan, load: Load, rate: float, shards: int | None,
                whole: bool = False) -> RunResult:
    """One run: ``plan.duration`` seconds of load at once, or with ``whole`` one whole flush interval's."""
    start_at, duration = whole_interval(system, load, rate) if whole else (None, plan.duration)
    if start_at:
        # the first reading just before the generator starts rendering: what other processes took of the
        # cores is then measured over the load's seconds, not the wait for the boundary
        time.sleep(max(0.0, start_at - time.time() - RENDER_LEAD_S - RENDER_SECS_PER_LINE * rate * duration))
    before = read_system(system, plan.system_cpus, cpu_first=False)
    sent = peers.run_loadgen(system.target_port(), rate, duration, load.per_datagram, load.series,
                             plan.workdir / "loadgen.json", mode=load.mode, cpu=plan.load_cpu,
                             sockets=plan.client_sockets, untagged=load.untagged, start_at=start_at)
    loaded = read_cpu(system, plan.system_cpus)
    counted = float(sent["counter_total"] + sent["timer_samples"])
    done = settle(system, before.totals.delivered + counted, load.flush_interval, plan.system_cpus, plan.exact)
    after = done.reading
    run = RunResult(
        system=system.name, per_datagram=load.per_datagram, target_rate=rate, shards=shards,
        sent=counted, offered_per_sec=sent["achieved_metrics_per_sec"],
        delivered=after.totals.delivered - before.totals.delivered, delivered_per_sec=0.0,
        elapsed=sent["elapsed"],
        cpu_seconds={stage: after.cpu.cpu[stage] - before.cpu.cpu[stage] for stage in after.cpu.cpu},
        peak_rss_mib={stage: peak_rss_kib(pid) / 1024 for stage, pid in system.stage_pids().items()},
        kernel_drops=after.drops - before.drops,
        losses={key: after.losses[key] - before.losses.get(key, 0.0) for key in after.losses},
        settled=done.settled,
        # the load's seconds only: what other processes did while the runner waited for a flush took nothing
        foreign_cpu_share=foreign_share(before.cpu, loaded, plan.system_cpus),
        load=load.name, metrics_sent=float(sent["metrics_sent"]), ring_wrapped=bool(sent["ring_wrapped"]),
        catch_up_s=max(0.0, done.catch_up_s), whole_interval=whole,
        rule_dropped=after.totals.rule_dropped - before.totals.rule_dropped,
        renamed=after.totals.renamed - before.totals.renamed,
    )
    run.delivered_per_sec = run.metrics_delivered / run.elapsed
    return run


class RateSearch:
    """Where one system's search under one load stands.

    One run per rate: step by ``step`` from the start rate (up while it passes, down while it fails)
    until a pass and a fail bracket the limit, then bisect geometrically between them. Then the highest
    pass below the lowest fail is confirmed with ``confirm_runs`` runs in all, the median deciding; a
    failed confirmation makes it a fail, the search bisects again if the pass below it is further off than
    the search's resolution, and the highest pass left is confirmed in turn.

    With fixed rates there is no search: each is measured with ``confirm_runs`` runs.
    """

    def __init__(self, start: float, max_rate: float, step: float, bisections: int, confirm_runs: int,
                 fixed: list[float] | None = None) -> None:
        self.fixed = list(fixed) if fixed else None
        self.rate: float | None = start
        self.max_rate = max_rate
        self.step = step
        self.bisections = bisections
        self.confirm_runs = confirm_runs
        #: how close the search brackets the limit: a failed confirmation bisects again while wider
        self.resolution = step ** (1 / 2 ** bisections)
        self.passed = self.failed = 0.0
        self.points: dict[float, RatePoint] = {}

    def best(self) -> float:
        """The highest passing rate below the lowest failing one; 0 if none."""
        return max((rate for rate, point in self.points.items()
                    if point.passed and (not self.failed or rate < self.failed)), default=0.0)

    def next(self) -> tuple[float, int] | None:
        """The rate to measure next and how many runs its point should then have; None when done."""
        if self.fixed is not None:
            return (self.fixed[0], self.confirm_runs) if self.fixed else None
        if self.rate is not None:
            return self.rate, 1
        best = self.best()
        if best and len(self.points[best].runs) < self.confirm_runs:
            return best, self.confirm_runs
        return None

    def record(self, point: RatePoint) -> str:
        """Takes the verdict at the rate next() gave; returns a note worth printing, or ""."""
        rate = point.target_rate
        self.points[rate] = point
        if self.fixed is not None:
            self.fixed.pop(0)
            return ""
        if self.rate is None:
            return self._confirmed(point)
        offered = point.median(lambda run: run.offered_per_sec)
        if point.passed and point.generator_limited:
            self.rate = None
            return f"{point.system} passed all the load generator could offer ({offered:,.0f} of {rate:,.0f}/s)"
        if point.passed:
            self.passed = max(self.passed, rate)
        else:
            # a generator that fell behind failed the system at what it did offer, not at the target
            limit = round(offered, -3) if point.generator_limited else rate
            self.failed = min(self.failed, limit) if self.failed else limit
        if not (self.passed and self.failed):
            self.rate = rate * self.step if point.passed else rate / self.step
            self.rate = round(self.rate, -3)
            if not MIN_RATE <= self.rate <= self.max_rate:
                self.rate = None
                return f"{point.system}: no {'failing' if point.passed else 'passing'} rate in range"
            return ""
        middle = round(math.sqrt(self.passed * self.failed), -3)
        if not self.bisections or middle in (self.passed, self.failed):
            self.rate = None
            return ""
        self.bisections -= 1
        self.rate = middle
        return ""

    def _confirmed(self, point: RatePoint) -> str:
        if point.passed:
            return ""
        rate = point.target_rate
        self.failed = min(self.failed, rate) if self.failed else rate
        self.passed = self.best()
        if not self.passed:
            # nothing passes below it: search on downward from it
            self.rate = round(rate / self.step, -3)
            if self.rate < MIN_RATE:
                self.rate = None
        elif self.failed / self.passed > self.resolution * 1.01:
            middle = round(math.sqrt(self.passed * self.failed), -3)
            self.rate = middle if middle not in (self.passed, self.failed) else None
        return (f"{point.system}: {rate:,.0f}/s failed its confirmation "
                f"(median loss {point.median(lambda run: run.loss_pct):.3f} %)")


class Progress:
    """One line per run, with the time the benchmark has taken so far."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.runs = 0
        self.repeated = 0

    def clock(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        return f"{elapsed // 60:2d}m{elapsed % 60:02d}s"

    def run(self, label: str, run: RunResult, then: str) -> None:
        self.runs += 1
        flags = "" if run.settled else "  (did not settle)"
        if run.generator_limited:
            flags += "  (generator behind)"
        if run.ring_wrapped:
            flags += "  (the generator's ring wrapped: some datagrams were sent twice)"
        if run.disturbed:
            share = f"other processes took {100 * run.foreign_cpu_share:.0f}% of the cores"
            flags += f"  ({share}: {then})" if then else f"  ({share})"
        if not run.kept_up:
            flags += f"  (behind: {run.catch_up_s:.1f} s to catch up)"
        print(f"[{self.runs:3d} {self.clock()}] {label}: offered {run.offered_per_sec:>11,.0f}/s "
              f"delivered {run.delivered_per_sec:>11,.0f}/s loss {run.loss_pct:7.3f}% "
              f"cpu {run.cpu_per_million():6.2f} s/M{flags}", flush=True)

    def note(self, text: str) -> None:
        print(f"[    {self.clock()}] {text}", flush=True)


class Bench:
    """Drives the systems through the sweep, the scaling runs and the idle measurement."""

    def __init__(self, args: argparse.Namespace, plan: Plan) -> None:
        self.args = args
        self.plan = plan
        self.progress = Progress()
        self.destinations: list[DestinationCheck] = []

    def make_system(self, name: str, flush_interval: float, shards: int | None = None,
                    receivers: int = 1) -> System:
        if name == "pystatsd" or name in VARIANTS:
            return PystatsdSystem(shards or self.args.shards, flush_interval, self.args.kafka_broker,
                                  extra_receivers=receivers - 1, variant=name, relay=self.args.relay)
        return PeerSystem(peers.PEERS[name], flush_interval, self.plan.workdir)

    @contextmanager
    def running(self, name: str, flush_interval: float, shards: int | None = None,
                receivers: int = 1, load: str = "") -> Iterator[System]:
        """The system started; stopped after the block, once its destinations were checked (a block that
        ended normally, under ``load``)."""
        system = self.make_system(name, flush_interval, shards, receivers)
        system.start()
        try:
            yield system
            self.check_destinations(system, load)
        finally:
            system.stop()

    def check_destinations(self, system: System, load: str) -> None:
        """What each of the system's other destinations holds (pystatsd-sinks' servers), once they hold what its
        counted output does or DESTINATIONS_SECS passed: after the runs, so that reading them back (every
        sample they stored) costs no run anything."""
        delivered = 0.0
        try:
            if not (first := system.received()):
                return
            totals = system.read()[0]
            delivered = totals.counters + totals.timer_samples
            check = DestinationCheck(system.name, load, delivered,
                                     settled(system.received, dict.fromkeys(first, delivered), DESTINATIONS_SECS))
        except (AssertionError, OSError, ValueError) as exc:
            # a server that cannot be read back (a sample stored twice, say) is a finding of the check, not a
            # reason to lose the sweep's measurements
            check = DestinationCheck(system.name, load, delivered, {}, f"{type(exc).__name__}: {exc}")
        self.destinations.append(check)
        self.progress.note(f"{system.name} {load}: the file sink {delivered:,.0f} counted items; "
                           + (", ".join(f"{name} {value:,.0f}" for name, value in check.received.items())
                              or check.error)
                           + (" OK" if check.exact else " MISMATCH"))

    def confirms_whole(self, load: Load) -> bool:
        """Whether the load's confirmation is one run over a whole flush interval instead of more short runs:
        with a flush interval longer than a run (and confirmation asked for)."""
        return load.flush_interval > self.plan.duration + WHOLE_START_AFTER_S + WHOLE_END_BEFORE_S \
            and self.plan.repeats > 1

    def confirm_runs(self, load: Load) -> int:
        """Runs a confirmed point has in all: the search's, then the confirmation's."""
        return 2 if self.confirms_whole(load) else self.plan.repeats

    def measure_rate(self, system: System, load: Load, rate: float, shards: int | None, runs: int,
                     whole: bool = False, receivers: int = 1) -> RatePoint:
        point = RatePoint(system.name, load.per_datagram, rate, shards, load=load.name, receivers=receivers)
        for repeat in range(1, runs + 1):
            point.runs.append(self.measure_undisturbed(system, load, point, repeat, runs, whole))
        return point

    def measure_undisturbed(self, system: System, load: Load, point: RatePoint, repeat: int,
                            runs: int, whole: bool = False) -> RunResult:
        """One run of the point, repeated (up to --retries times) while other processes took a share of the
        system's cores: on a shared machine their tests would otherwise pass for the system's limits."""
        shards = f" {point.shards} shards" if point.shards else ""
        shards += f" {point.receivers} receivers" if point.receivers > 1 else ""
        label = (f"{system.name:15s} {load.name:12s}{shards} {point.target_rate:>11,.0f}/s "
                 f"run {repeat}/{runs}{' (whole interval)' if whole else ''}")
        retries = 0
        while True:
            run = measure_run(system, self.plan, load, point.target_rate, point.shards, whole)
            # the cap keeps a machine that is never quiet from stretching the sweep without bound
            again = run.disturbed and retries < self.args.retries and self.progress.repeated < MAX_REPEATED_RUNS
            self.progress.run(label, run, "repeating" if again else "")
            if not run.settled:
                # whatever is still queued would be counted in the next run: start afresh
                system.stop()
                system.start()
                self.warm_rules(system, load)
            if not again:
                return run
            retries += 1
            self.progress.repeated += 1

    def warm_rules(self, system: System, load: Load) -> None:
        """pystatsd-rules' rules asked of (nearly) every series of the load, once, before it is measured: see
        RULES_WARM_RATE. Any other system is left as it is."""
        if system.name != PYSTATSD_RULES:
            return
        before = system.read()[0].delivered
        sent = peers.run_loadgen(system.target_port(), RULES_WARM_RATE, RULES_WARM_SECS, load.per_datagram,
                                 load.series, self.plan.workdir / "warm.json", mode=load.mode, cpu=self.plan.load_cpu,
                                 sockets=self.plan.client_sockets, untagged=load.untagged)
        settle(system, before + sent["counter_total"] + sent["timer_samples"], load.flush_interval,
               self.plan.system_cpus)

    def systems_for(self, load: Load) -> list[str]:
        if self.args.systems_given:
            return list(self.args.systems)
        if load.mode == "counters":
            return [name for name in self.args.systems if name in COUNTERS_SYSTEMS]
        return [name for name in self.args.systems if name not in VARIANTS or load.name in VARIANT_LOADS]

    def search(self, load: Load, name: str, measured: list[RatePoint]) -> RateSearch:
        """One system's search under ``load``, started near where it will end."""
        step, bisections = STEP, self.args.bisections
        if self.args.start_rate:
            start = self.args.start_rate
        else:
            source, factor = START_FROM.get(load.name, ("", 1.0))
            known = highest_pass(measured, name, source) if source else 0.0
            if known:
                start, step, bisections = known * factor, CLOSE_STEP, max(0, bisections - 1)
            else:
                size = load.per_datagram if load.per_datagram in (1, 20) else (20 if load.per_datagram > 5 else 1)
                # a variant from where pystatsd starts: the two are to be compared
                start = START_RATES[(load.mode, size)].get("pystatsd" if name in VARIANTS else name, 100_000)
        return RateSearch(max(MIN_RATE, round(start, -3)), self.args.max_rate, step, bisections,
                          self.confirm_runs(load), self.args.rates)

    def sweep(self, load: Load, measured: list[RatePoint]) -> list[RatePoint]:
        """Every system's search under one load at once, run by run in turn: a shared VM's speed drifts by
        tens of percent over an hour, and interleaving lays that drift on every system alike."""
        names = self.systems_for(load)
        if not names:
            return []
        self.progress.note(f"load {load.name}: {load.describe()}; systems {', '.join(names)}")
        with ExitStack() as stack:
            searches = {stack.enter_context(self.running(name, load.flush_interval, load=load.name)):
                        self.search(load, name, measured) for name in names}
            time.sleep(WARMUP_SECS)
            for system in searches:
                self.warm_rules(system, load)
            while True:
                step = []
                for system, search in searches.items():
                    if (wanted := search.next()) is not None:
                        rate, runs = wanted
                        point = search.points.get(rate) or RatePoint(system.name, load.per_datagram, rate, None,
                                                                     load=load.name)
                        step.append((system, search, point, runs))
                if not step:
                    break
                for _ in range(max(runs for *_, runs in step)):
                    for system, _, point, runs in step:
                        if len(point.runs) < runs:
                            # a point's first run is the search's; a whole-interval confirmation follows it
                            whole = bool(point.runs) and self.confirms_whole(load)
                            point.runs.append(self.measure_undisturbed(system, load, point, len(point.runs) + 1,
                                                                       runs, whole))
                for _, search, point, _ in step:
                    if note := search.record(point):
                        self.progress.note(note)
        return [point for search in searches.values() for point in search.points.values()]

    def scaling(self, sweep: list[RatePoint], load: Load) -> list[RatePoint]:
        rate = self.args.scaling_rate or highest_pass(sweep, "pystatsd", load.name)
        if not rate:
            self.progress.note(f"scaling skipped: no passing pystatsd rate under {load.name} to scale at")
            return []
        points = []
        whole = self.confirms_whole(load)  # CPU per busy core as a steady load costs it
        for shards in self.args.scaling_shards:
            with self.running("pystatsd", load.flush_interval, shards) as system:
                time.sleep(WARMUP_SECS)
                points.append(self.measure_rate(system, load, rate, shards, self.args.scaling_runs, whole))
        for receivers in (r for r in self.args.scaling_receivers if r > 1):
            with self.running("pystatsd", load.flush_interval, self.args.shards, receivers) as system:
                time.sleep(WARMUP_SECS)
                points.append(self.measure_rate(system, load, rate, self.args.shards, self.args.scaling_runs, whole,
                                                receivers))
        return points

    def idle(self, name: str) -> IdleResult:
        """CPU over idle seconds with nothing sent, then peak RSS once RSS_SERIES series went through."""
        with self.running(name, IDLE_FLUSH_INTERVAL) as system:
            time.sleep(2 * IDLE_FLUSH_INTERVAL)  # start-up work (imports, first flush) is not idling
            before = read_cpu(system, self.plan.system_cpus)
            time.sleep(self.args.idle_seconds)
            after = read_cpu(system, self.plan.system_cpus)
            cpu = {stage: 100 * (after.cpu[stage] - before.cpu[stage]) / self.args.idle_seconds
                   for stage in after.cpu}
            expected = system.read()[0].delivered + send_series_once(system, RSS_SERIES)
            settle(system, expected, IDLE_FLUSH_INTERVAL, self.plan.system_cpus)
            rss = {stage: peak_rss_kib(pid) / 1024 for stage, pid in system.stage_pids().items()}
        self.progress.note(f"{name:15s} idle {sum(cpu.values()):.2f}% of a core; peak RSS "
                           + ", ".join(f"{stage} {mib:.1f} MiB" for stage, mib in rss.items()))
        return IdleResult(name, self.args.idle_seconds, cpu, rss)

    def full(self, results: BenchResults) -> None:
        # idle, the rules, sinks and relay have nothing to do: pystatsd's variants idle as pystatsd does
        idling = [name for name in self.args.systems if name not in VARIANTS] if self.args.idle_seconds > 0 else []
        for name in idling:
            results.idle.append(self.idle(name))
        for load in self.args.loads:
            results.sweep.extend(self.sweep(load, results.sweep))
        headline = next((load for load in self.args.loads if load.name == HEADLINE), self.args.loads[0])
        if "pystatsd" in self.systems_for(headline):
            results.scaling = self.scaling(results.sweep, headline)

    def smoke(self, results: BenchResults) -> bool:
        """One short low-rate run per system and load; True when every system delivered exactly what was
        sent."""
        ok = True
        rate = self.args.rates[0] if self.args.rates else SMOKE_RATE
        for load in self.args.loads:
            for name in self.systems_for(load):
                checked = len(self.destinations)
                with self.running(name, load.flush_interval, load=load.name) as system:
                    point = self.measure_rate(system, load, rate, None, 1)
                results.sweep.append(point)
                for run in point.runs:
                    verdict = smoke_verdict(run, peer=name in peers.PEERS)
                    ok = ok and verdict != "MISMATCH"
                    print(f"smoke {name} {load.name}: sent={run.sent:.0f} delivered={run.delivered:.0f} "
                          f"(counter increments + timer samples) {verdict}", flush=True)
                # and every destination beside the file sink holds what it does (check_destinations printed it)
                ok = ok and all(check.exact for check in self.destinations[checked:])
        return ok


def smoke_verdict(run: RunResult, peer: bool) -> str:
    """OK when the system delivered exactly what was sent. A peer whose socket the kernel overflowed in
    the run (a busy machine descheduled it) may deliver less: that loss is the peer's and the kernel
    counted it, while the smoke checks the benchmark's own counting. pystatsd must be exact: it
    accounts for its kernel drops itself."""
    if run.delivered == run.sent:
        return "OK"
    if peer and run.kernel_drops > 0 and run.delivered < run.sent:
        return f"SHORT, the kernel dropped {run.kernel_drops} datagrams on its socket"
    return "MISMATCH"


def parse_rate(text: str) -> float:
    """``250000``, ``250k`` or ``1.5M`` metrics per second."""
    scale = {"k": 1e3, "m": 1e6}.get(text[-1:].lower(), 1.0)
    value = float(text[:-1] if scale != 1.0 else text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a rate must be positive: {text}")
    return value * scale


def comma_list(parse: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [parse(item) for item in text.split(",") if item]


def known(names: tuple[str, ...] | dict, what: str) -> Callable[[str], str]:
    def check(name: str) -> str:
        if name not in names:
            raise argparse.ArgumentTypeError(f"unknown {what} {name!r}; one of {', '.join(names)}")
        return name
    return check


#: The options that describe a load of one's own instead of the default loads.
CUSTOM_LOAD_OPTIONS = ("mode", "series", "per_datagram", "flush_interval", "untagged")


def custom_loads(args: argparse.Namespace) -> list[Load]:
    """The loads --mode, --series, --per-datagram, --flush-interval and --untagged describe, one per
    datagram size: the mix defaults to the headline's series and flush, counters to the secondary's."""
    mode = args.mode or "mix"
    like = LOADS[HEADLINE] if mode == "mix" else LOADS["counters-20"]
    series = args.series or like.series
    flush = args.flush_interval or like.flush_interval
    return [Load(f"{mode}-{size}-{series}-{flush:g}s{'-untagged' if args.untagged else ''}", mode, size, series,
                 flush, args.untagged) for size in args.per_datagram or [20, 1]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", type=comma_list(known(ALL_SYSTEMS, "system")),
                        help=f"comma-separated, of {', '.join(ALL_SYSTEMS)} (default: all; the repeated-counter "
                             f"loads run {', '.join(COUNTERS_SYSTEMS)} only unless this is given)")
    parser.add_argument("--loads", type=comma_list(known(LOADS, "load")),
                        help="comma-separated loads of the sweep: " + "; ".join(
                            f"{name} ({load.describe()})" for name, load in LOADS.items()) + " (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the loads {', '.join(QUICK_LOADS)} only, one run per rate and the highest pass "
                             "confirmed once, no idle or scaling runs: about a third of the full sweep's time")
    parser.add_argument("--mode", choices=("counters", "mix"),
                        help="a load of one's own instead of --loads: the realistic mix or repeated counters")
    parser.add_argument("--series", type=int, help="series of one's own load (mix 20,000, counters 1,000)")
    parser.add_argument("--per-datagram", type=comma_list(int), help="lines per datagram of one's own loads (20,1)")
    parser.add_argument("--flush-interval", type=float,
                        help="flush interval of one's own load, every system alike (mix 10, counters 1)")
    parser.add_argument("--untagged", action="store_true",
                        help="one's own load without DogStatsD tags, as plain Etsy clients send")
    parser.add_argument("--rates", type=comma_list(parse_rate), help="measure these rates instead of searching")
    parser.add_argument("--start-rate", type=parse_rate, help="where every search starts (default: per system)")
    parser.add_argument("--max-rate", type=parse_rate, default=4e6, help="the search never offers more")
    parser.add_argument("--bisections", type=int, default=2,
                        help="bisections after the climb (2: a highest rate is known to within 19 %%)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs at the highest passing rate, the median deciding (the search runs each rate once)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a run is repeated while other processes take the system's cores")
    parser.add_argument("--duration", type=float, help="seconds of load per run (default 3, 2 with --smoke)")
    parser.add_argument("--shards", type=int, default=2, help="pystatsd's shards in the sweep")
    parser.add_argument("--scaling-shards", type=comma_list(int), default=[1, 2, 4],
                        help="shard counts of the scaling runs (empty: none)")
    parser.add_argument("--scaling-receivers", type=comma_list(int), default=[1, 2],
                        help="receiver counts of the scaling runs, at --shards shards (1 is the shard runs')")
    parser.add_argument("--scaling-runs", type=int, default=1, help="runs per scaling configuration")
    parser.add_argument("--client-sockets", type=int, default=8,
                        help="source sockets of the load generator (flows SO_REUSEPORT receivers share)")
    parser.add_argument("--scaling-rate", type=parse_rate,
                        help=f"rate of the scaling runs (default: pystatsd's highest passing rate under {HEADLINE})")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="length of the idle CPU measurement (0: none)")
    parser.add_argument("--sink", choices=("file", "kafka"), default="file", help="pystatsd's sink")
    parser.add_argument("--kafka-broker", help="host:port of the broker, required with --sink kafka")
    parser.add_argument("--relay", action="store_true",
                        help="pystatsd relays every line (relay:) to a UDP socket on loopback that nothing reads")
    parser.add_argument("--load-cpu", type=int, default=0, help="the core the load generator is pinned to")
    parser.add_argument("--smoke", action="store_true",
                        help=f"one short low-rate run per system ({SMOKE_LOAD.describe()}, unless a load of one's "
                             "own is given); exit 1 unless delivered == sent everywhere")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md",
                        help="the report (not written by --smoke); the plot goes beside it as results.png")
    parser.add_argument("--json", type=Path, help="also write every measurement here as JSON")
    args = parser.parse_args(argv)
    if args.sink == "kafka" and not args.kafka_broker:
        parser.error("--sink kafka needs --kafka-broker")
    if args.sink == "file":
        args.kafka_broker = None
    args.systems_given = args.systems is not None
    args.systems = args.systems or list(ALL_SYSTEMS)
    custom = any(getattr(args, option) for option in CUSTOM_LOAD_OPTIONS)
    if custom and args.loads:
        parser.error("--loads and a load of one's own (--mode, --series, --per-datagram, --flush-interval, "
                     "--untagged) exclude each other")
    if custom:
        args.loads = custom_loads(args)
    elif args.loads:
        args.loads = [LOADS[name] for name in args.loads]
    elif args.smoke:
        args.loads = [SMOKE_LOAD]
    else:
        args.loads = [LOADS[name] for name in (QUICK_LOADS if args.quick else LOADS)]
    if args.duration is None:
        args.duration = 2.0 if args.smoke else 3.0
    if args.smoke:
        # a smoke run checks correctness at a low rate, which other processes' load cannot change
        args.repeats = 1
    if args.quick:
        # One run per rate, then the highest pass confirmed once: over a whole flush interval under a 10 s
        # flush (confirms_whole). A 3 s run lands on a flush or between two, so unconfirmed, two quick
        # runs in a row differed by two of the search's steps (41 %) on one lost burst.
        args.repeats = 2
    if args.smoke:
        args.retries = 0
    if args.quick:
        args.idle_seconds, args.scaling_shards, args.scaling_receivers = 0.0, [], []
    return args


def pin_systems_away_from(load_cpu: int) -> list[int]:
    """Keeps this process, and so every system it starts, off the load generator's core.

    With a single core there is nothing to keep apart: everything shares it.
    """
    allowed = os.sched_getaffinity(0)
    others = sorted(allowed - {load_cpu})
    if not others:
        print(f"only core {load_cpu} is available: the systems share it with the load generator", flush=True)
        return sorted(allowed)
    os.sched_setaffinity(0, others)
    return others


def command_line(module: str, argv: list[str]) -> str:
    """The command as typed from the repo root, to re-run it: ``.venv/bin/python -m <module> <argv>``."""
    return shlex.join([os.path.relpath(sys.executable, REPO), "-m", module, *argv])


def exit_on_sigterm(signum: int, frame: object) -> None:
    """A terminated benchmark still stops what it started (the finally blocks run)."""
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.smoke and importlib.util.find_spec("matplotlib") is None:
        # found now, not after the sweep: the plot is drawn at the end
        sys.exit("matplotlib is missing for the plot: pip install -e '.[bench]'")
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    if not peers.LOADGEN.exists() or peers.LOADGEN.stat().st_mtime < (REPO / "bench" / "loadgen.c").stat().st_mtime:
        peers.build_loadgen()
    system_cpus = pin_systems_away_from(args.load_cpu)
    with tempfile.TemporaryDirectory(prefix="pstbench") as workdir:
        plan = Plan(args.duration, args.repeats, args.load_cpu, system_cpus, Path(workdir), args.client_sockets,
                    exact=args.smoke)
        results = BenchResults(report.machine(args, command_line("bench.run", sys.argv[1:]), system_cpus))
        bench = Bench(args, plan)
        if args.smoke:
            ok = bench.smoke(results)
        else:
            bench.full(results)
            ok = True
        results.meta["load_average_after"] = os.getloadavg()
        results.meta["minutes"] = round((time.monotonic() - bench.progress.started) / 60, 1)
        results.meta["runs_repeated"] = bench.progress.repeated
        results.destinations = bench.destinations
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=1, default=str))
    if not args.smoke:
        report.write(results, args.out, args.out.with_name("results.png"))
        print(report.summary_table(results))
        print(f"report: {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
