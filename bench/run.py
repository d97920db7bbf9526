"""The benchmark: pystatsd and its peers under the same paced UDP load, verified end to end.

For every system and datagram size it searches the highest offered rate whose median loss over
three runs stays under 0.1 %: doubling (or halving) from a start rate until one rate passes and
the next fails, then bisecting between them. A run offers counters from the C load generator
(bench/loadgen.c) pinned to one core while the systems get the others, waits until the system
delivered what was sent (or its total stopped moving), and compares: loss = 1 - delivered / sent,
where the sum of every counter aggregate of the load's names is the delivered figure. It also
reads CPU seconds and peak RSS of every stage from /proc, and where loss happened: the kernel's
drops on the receiving socket (/proc/net/udp) and the systems' own loss counters. The systems run
side by side and take turns run by run; a run during which other processes took the systems' cores
is repeated. Then it scales pystatsd over shard counts, measures idle CPU and memory with 1,000
series, and writes a report and a plot.

    .venv/bin/python bench/run.py                      # the full sweep; writes bench/RESULTS.md
    .venv/bin/python bench/run.py --smoke              # seconds: one low-rate run per system
    .venv/bin/python bench/run.py --systems pystatsd --per-datagram 20 --rates 100k,200k
"""

from __future__ import annotations

import argparse
import importlib.util
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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: bench/ is sys.path[0], the repo is not
    sys.path.insert(0, str(REPO))

from bench import peers, procstat, report  # noqa: E402
from bench.results import BenchResults, IdleResult, RatePoint, RunResult, highest_pass  # noqa: E402
from bench.systems import PeerSystem, PystatsdSystem, System, send_series_once, udp_backlog, udp_drops  # noqa: E402

ALL_SYSTEMS = ("pystatsd", "etsy", "etsy-tuned", "statsd_exporter")
#: Where the search starts, per datagram size: near where the systems here pass, so few steps are spent
#: getting there (a start that fails steps down).
START_RATES = {1: 80_000, 20: 200_000}
STEP = 2.0
#: Below this the search gives up looking for a passing rate.
MIN_RATE = 1_000
SMOKE_RATE = 20_000
RSS_SERIES = 1_000
#: Disturbed runs repeated at most, over the whole benchmark.
MAX_REPEATED_RUNS = 30
#: How long a system gets after the load ends to deliver what it still holds.
SETTLE_TIMEOUT_S = 30.0


@dataclass
class Reading:
    """One look at a running system and the cores it runs on; every figure is cumulative."""

    at: float
    cpu: dict[str, float]
    drops: int
    delivered: float
    losses: dict[str, float]
    #: user-mode seconds of the system's cores, of the system's processes, and of this runner
    cores_user: float
    system_user: float
    runner_user: float


@dataclass
class Plan:
    """What every run shares."""

    duration: float
    series: int
    repeats: int
    load_cpu: int
    system_cpus: list[int]
    workdir: Path
    #: the load generator's source sockets, for every system and run alike
    client_sockets: int = 8
    #: "counters" (what the peers are compared on) or "mix" (counters, timers, gauges and sets)
    mode: str = "counters"
    #: lines without their two DogStatsD tags
    untagged: bool = False


def read_system(system: System, cpus: list[int]) -> Reading:
    return Reading(
        at=time.monotonic(),
        cpu={stage: procstat.cpu_seconds(pid) for stage, pid in system.stage_pids().items()},
        drops=udp_drops(system),
        delivered=system.delivered(),
        losses=system.loss_counters(),
        cores_user=procstat.cores_user_seconds(cpus),
        system_user=sum(procstat.user_cpu_seconds(pid) for pid in system.stage_pids().values()),
        runner_user=os.times().user,
    )


def foreign_share(before: Reading, after: Reading, cpus: list[int]) -> float:
    """The share of the system's cores that processes other than the system and this runner took, in
    user mode (what other engineers' tests mostly are)."""
    own = after.system_user - before.system_user + after.runner_user - before.runner_user
    foreign = after.cores_user - before.cores_user - own
    return max(0.0, foreign) / ((after.at - before.at) * len(cpus))


def settle(system: System, expected: float, quiet_secs: float) -> bool:
    """Waits until the delivered total reaches ``expected``, or stops moving with nothing queued.

    False when it was still moving after SETTLE_TIMEOUT_S.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last, still_since = -1.0, time.monotonic()
    while True:
        total = system.delivered()
        now = time.monotonic()
        if total >= expected:
            return True
        if total != last or udp_backlog(system):
            last, still_since = total, now
        elif now - still_since >= quiet_secs:
            return True
        if now >= deadline:
            return False
        time.sleep(0.1)


def measure_run(system: System, plan: Plan, rate: float, per_datagram: int, shards: int | None,
                quiet_secs: float) -> RunResult:
    before = read_system(system, plan.system_cpus)
    sent = peers.run_loadgen(system.target_port(), rate, plan.duration, per_datagram, plan.series,
                             plan.workdir / "loadgen.json", mode=plan.mode, cpu=plan.load_cpu,
                             sockets=plan.client_sockets, untagged=plan.untagged)
    settled = settle(system, before.delivered + sent["counter_total"], quiet_secs)
    after = read_system(system, plan.system_cpus)
    delivered = after.delivered - before.delivered
    return RunResult(
        system=system.name, per_datagram=per_datagram, target_rate=rate, shards=shards,
        sent=float(sent["counter_total"]), offered_per_sec=sent["achieved_metrics_per_sec"],
        delivered=delivered, delivered_per_sec=delivered / sent["elapsed"], elapsed=sent["elapsed"],
        cpu_seconds={stage: after.cpu[stage] - before.cpu[stage] for stage in after.cpu},
        peak_rss_mib={stage: procstat.peak_rss_kib(pid) / 1024 for stage, pid in system.stage_pids().items()},
        kernel_drops=after.drops - before.drops,
        losses={key: after.losses[key] - before.losses.get(key, 0.0) for key in after.losses},
        settled=settled,
        foreign_cpu_share=foreign_share(before, after, plan.system_cpus),
    )


class RateSearch:
    """Where one system's search stands: step by STEP from the start rate (up while it passes, down while
    it fails) until a pass and a fail bracket the limit, then bisect geometrically between them.

    With fixed rates there is no search: each is measured in turn.
    """

    def __init__(self, start: float, max_rate: float, bisections: int, fixed: list[float] | None) -> None:
        self.fixed = list(fixed) if fixed else None
        self.rate: float | None = start
        self.max_rate = max_rate
        self.bisections = bisections
        self.passed = self.failed = 0.0

    def next_rate(self) -> float | None:
        if self.fixed is not None:
            return self.fixed[0] if self.fixed else None
        return self.rate

    def record(self, point: RatePoint) -> str:
        """Takes the verdict at the rate next_rate() gave; returns a note worth printing, or ""."""
        if self.fixed is not None:
            self.fixed.pop(0)
            return ""
        rate = point.target_rate
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
            self.rate = rate * STEP if point.passed else rate / STEP
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
        if run.disturbed:
            share = f"other processes took {100 * run.foreign_cpu_share:.0f}% of the cores"
            flags += f"  ({share}: {then})" if then else f"  ({share})"
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

    def make_system(self, name: str, shards: int | None = None, receivers: int = 1) -> System:
        if name == "pystatsd":
            return PystatsdSystem(shards or self.args.shards, self.args.flush_interval, self.args.kafka_broker,
                                  extra_receivers=receivers - 1)
        return PeerSystem(peers.PEERS[name], self.args.flush_interval, self.plan.workdir)

    @contextmanager
    def running(self, name: str, shards: int | None = None, receivers: int = 1) -> Iterator[System]:
        system = self.make_system(name, shards, receivers)
        system.start()
        try:
            yield system
        finally:
            system.stop()

    def quiet_secs(self) -> float:
        """Long enough without a change that every interval holding the run's data was flushed."""
        return 2 * self.args.flush_interval + 0.5

    def measure_rate(self, system: System, rate: float, per_datagram: int, shards: int | None) -> RatePoint:
        point = RatePoint(system.name, per_datagram, rate, shards)
        for repeat in range(1, self.plan.repeats + 1):
            point.runs.append(self.measure_undisturbed(system, point, repeat))
        return point

    def measure_undisturbed(self, system: System, point: RatePoint, repeat: int) -> RunResult:
        """One run of the point, repeated (up to --retries times) while other processes took a share of the
        system's cores: on a shared machine their tests would otherwise pass for the system's limits."""
        shards = f" {point.shards} shards" if point.shards else ""
        label = (f"{system.name:15s} {point.per_datagram:2d}/dgram{shards} {point.target_rate:>11,.0f}/s "
                 f"run {repeat}/{self.plan.repeats}")
        retries = 0
        while True:
            run = measure_run(system, self.plan, point.target_rate, point.per_datagram, point.shards,
                              self.quiet_secs())
            # the cap keeps a machine that is never quiet from stretching the sweep without bound
            again = run.disturbed and retries < self.args.retries and self.progress.repeated < MAX_REPEATED_RUNS
            self.progress.run(label, run, "repeating" if again else "")
            if not run.settled:
                # whatever is still queued would be counted in the next run: start afresh
                system.stop()
                system.start()
            if not again:
                return run
            retries += 1
            self.progress.repeated += 1

    def sweep(self, per_datagram: int) -> list[RatePoint]:
        """Every system's search at once, run by run in turn: a shared VM's speed drifts by tens of
        percent over an hour, and interleaving lays that drift on every system alike."""
        start = self.args.start_rate or START_RATES.get(per_datagram, START_RATES[1])
        points: list[RatePoint] = []
        with ExitStack() as stack:
            searches = {stack.enter_context(self.running(name)):
                        RateSearch(start, self.args.max_rate, self.args.bisections, self.args.rates)
                        for name in self.args.systems}
            # start-up work (imports, JIT) of the systems started last would count against the first runs
            time.sleep(2 * self.args.flush_interval)
            while True:
                step = [(system, search, RatePoint(system.name, per_datagram, rate, None))
                        for system, search in searches.items() if (rate := search.next_rate())]
                if not step:
                    return points
                for repeat in range(1, self.plan.repeats + 1):
                    for system, _, point in step:
                        point.runs.append(self.measure_undisturbed(system, point, repeat))
                for _, search, point in step:
                    if note := search.record(point):
                        self.progress.note(note)
                    points.append(point)

    def scaling(self, sweep: list[RatePoint]) -> list[RatePoint]:
        rate = self.args.scaling_rate or highest_pass(sweep, "pystatsd", 20)
        if not rate:
            self.progress.note("scaling skipped: no passing pystatsd rate at 20/datagram to scale at")
            return []
        points = []
        for shards in self.args.scaling_shards:
            with self.running("pystatsd", shards) as system:
                points.append(self.measure_rate(system, rate, 20, shards))
        for receivers in (r for r in self.args.scaling_receivers if r > 1):
            with self.running("pystatsd", self.args.shards, receivers) as system:
                point = self.measure_rate(system, rate, 20, self.args.shards)
                point.receivers = receivers
                points.append(point)
        return points

    def idle(self, name: str) -> IdleResult:
        """CPU over idle seconds with nothing sent, then peak RSS once RSS_SERIES series went through."""
        with self.running(name) as system:
            time.sleep(2 * self.args.flush_interval)  # start-up work (imports, first flush) is not idling
            before = read_system(system, self.plan.system_cpus)
            time.sleep(self.args.idle_seconds)
            after = read_system(system, self.plan.system_cpus)
            cpu = {stage: 100 * (after.cpu[stage] - before.cpu[stage]) / self.args.idle_seconds
                   for stage in after.cpu}
            expected = after.delivered + send_series_once(system, RSS_SERIES)
            settle(system, expected, self.quiet_secs())
            time.sleep(self.args.flush_interval)  # gauges, timers and sets reach the sinks in the same flush
            rss = {stage: procstat.peak_rss_kib(pid) / 1024 for stage, pid in system.stage_pids().items()}
        self.progress.note(f"{name:15s} idle {sum(cpu.values()):.2f}% of a core; peak RSS "
                           + ", ".join(f"{stage} {mib:.1f} MiB" for stage, mib in rss.items()))
        return IdleResult(name, self.args.idle_seconds, cpu, rss)

    def full(self, results: BenchResults) -> None:
        for name in self.args.systems if self.args.idle_seconds > 0 else []:
            results.idle.append(self.idle(name))
        for per_datagram in self.args.per_datagram:
            results.sweep.extend(self.sweep(per_datagram))
        if "pystatsd" in self.args.systems and 20 in self.args.per_datagram:
            results.scaling = self.scaling(results.sweep)

    def smoke(self, results: BenchResults) -> bool:
        """One short low-rate run per system; True when every system delivered exactly what was sent."""
        ok = True
        for name in self.args.systems:
            with self.running(name) as system:
                point = self.measure_rate(system, self.args.rates[0] if self.args.rates else SMOKE_RATE,
                                          self.args.per_datagram[0], None)
            results.sweep.append(point)
            for run in point.runs:
                exact = run.delivered == run.sent
                ok = ok and exact
                print(f"smoke {name}: sent={run.sent:.0f} delivered={run.delivered:.0f} "
                      f"{'OK' if exact else 'MISMATCH'}", flush=True)
        return ok


def parse_rate(text: str) -> float:
    """``250000``, ``250k`` or ``1.5M`` metrics per second."""
    scale = {"k": 1e3, "m": 1e6}.get(text[-1:].lower(), 1.0)
    value = float(text[:-1] if scale != 1.0 else text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a rate must be positive: {text}")
    return value * scale


def comma_list(parse: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [parse(item) for item in text.split(",") if item]


def known_system(name: str) -> str:
    if name not in ALL_SYSTEMS:
        raise argparse.ArgumentTypeError(f"unknown system {name!r}; one of {', '.join(ALL_SYSTEMS)}")
    return name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", type=comma_list(known_system), default=list(ALL_SYSTEMS),
                        help="comma-separated, of " + ", ".join(ALL_SYSTEMS))
    parser.add_argument("--per-datagram", type=comma_list(int), default=[20, 1], help="metrics per datagram")
    parser.add_argument("--rates", type=comma_list(parse_rate), help="measure these rates instead of searching")
    parser.add_argument("--start-rate", type=parse_rate, help="where the search starts (default by datagram size)")
    parser.add_argument("--max-rate", type=parse_rate, default=4e6, help="the search never offers more")
    parser.add_argument("--bisections", type=int, default=2,
                        help="bisections after the climb (2: the highest rate is known to within 19 %%)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per rate (the median decides)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a run is repeated while other processes take the system's cores")
    parser.add_argument("--duration", type=float, help="seconds of load per run (default 3, 2 with --smoke)")
    parser.add_argument("--series", type=int, default=1000, help="distinct counter series in the load")
    parser.add_argument("--mode", choices=("counters", "mix"), default="counters",
                        help="the load: counters only, or 50 %% counters, 25 %% timers, 15 %% gauges and 10 %% "
                             "sets (loss is still judged on the counters)")
    parser.add_argument("--untagged", action="store_true",
                        help="lines without their DogStatsD tags (|#env:bench,shard:N), as plain Etsy clients send")
    parser.add_argument("--flush-interval", type=float, default=1.0, help="flush interval of every system")
    parser.add_argument("--shards", type=int, default=2, help="pystatsd's shards in the sweep")
    parser.add_argument("--scaling-shards", type=comma_list(int), default=[1, 2, 4],
                        help="shard counts of the scaling runs (empty: none)")
    parser.add_argument("--scaling-receivers", type=comma_list(int), default=[1, 2],
                        help="receiver counts of the scaling runs, at --shards shards (1 is the shard runs')")
    parser.add_argument("--client-sockets", type=int, default=8,
                        help="source sockets of the load generator (flows SO_REUSEPORT receivers share)")
    parser.add_argument("--scaling-rate", type=parse_rate,
                        help="rate of the scaling runs (default: pystatsd's highest passing rate at 20/datagram)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="length of the idle CPU measurement (0: none)")
    parser.add_argument("--sink", choices=("file", "kafka"), default="file", help="pystatsd's sink")
    parser.add_argument("--kafka-broker", help="host:port of the broker, required with --sink kafka")
    parser.add_argument("--load-cpu", type=int, default=0, help="the core the load generator is pinned to")
    parser.add_argument("--smoke", action="store_true",
                        help="one short low-rate run per system; exit 1 unless delivered == sent everywhere")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md",
                        help="the report (not written by --smoke); the plot goes beside it as results.png")
    parser.add_argument("--json", type=Path, help="also write every measurement here as JSON")
    args = parser.parse_args(argv)
    if args.sink == "kafka" and not args.kafka_broker:
        parser.error("--sink kafka needs --kafka-broker")
    if args.sink == "file":
        args.kafka_broker = None
    if args.duration is None:
        args.duration = 2.0 if args.smoke else 3.0
    if args.smoke:
        # a correctness check at a low rate: other processes' load cannot change delivered == sent
        args.repeats, args.retries = 1, 0
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


def command_line() -> str:
    """The command as typed from the repo root, to re-run it."""
    python = os.path.relpath(sys.executable, REPO)
    script = os.path.relpath(Path(__file__).resolve(), REPO)
    return shlex.join([python, script, *sys.argv[1:]])


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
        plan = Plan(args.duration, args.series, args.repeats, args.load_cpu, system_cpus, Path(workdir),
                    args.client_sockets, args.mode, args.untagged)
        results = BenchResults(report.machine(args, command_line(), system_cpus))
        bench = Bench(args, plan)
        if args.smoke:
            ok = bench.smoke(results)
        else:
            bench.full(results)
            ok = True
        results.meta["load_average_after"] = os.getloadavg()
        results.meta["minutes"] = round((time.monotonic() - bench.progress.started) / 60, 1)
        results.meta["runs_repeated"] = bench.progress.repeated
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=1, default=str))
    if not args.smoke:
        report.write(results, args.out, args.out.with_name("results.png"))
        print(report.summary_table(results))
        print(f"report: {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
