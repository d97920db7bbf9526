"""What the benchmark measured: runs, rate points, idle figures, and the verdicts drawn from them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: A rate passes when the median loss of its runs is under this ...
MAX_LOSS_PCT = 0.1
#: ... and the system, in the median, had read and processed everything it was sent within this long
#: after the load ended: one that needs longer holds a backlog in a queue of its own (Telegraf's input
#: queues up to 100,000 datagrams) and could not have taken the rate for longer than the run. A flush
#: that falls right after the load takes some of it.
MAX_CATCH_UP_S = 1.0
#: The generator counts as keeping up when it offered at least this share of the target rate.
GENERATOR_SHARE = 0.97
#: A run during which other processes took more than this share of the system's cores is disturbed.
DISTURBED_SHARE = 0.05


@dataclass(frozen=True)
class Load:
    """One load of the sweep: what the generator sends and the flush interval every system runs with."""

    name: str
    #: "mix" (the realistic mix) or "counters" (the repeated-counter load); see bench/loadgen.c
    mode: str
    per_datagram: int
    series: int
    flush_interval: float
    untagged: bool = False

    def describe(self) -> str:
        kind = "the mix" if self.mode == "mix" else "repeated counters"
        lines = f"{self.per_datagram} line{'s' if self.per_datagram > 1 else ''} per datagram"
        tags = ", untagged" if self.untagged else ""
        return f"{kind}, {lines}, {self.series:,} series, {self.flush_interval:g} s flush{tags}"


#: The loads of the default sweep, headline first: the realistic mix, then the repeated counters.
LOADS = {load.name: load for load in (
    Load("mix-20", "mix", 20, 20_000, 10.0),
    Load("mix-1", "mix", 1, 20_000, 10.0),
    Load("mix-20-100k", "mix", 20, 100_000, 10.0),
    Load("mix-20-1s", "mix", 20, 20_000, 1.0),
    Load("counters-20", "counters", 20, 1_000, 1.0),
    Load("counters-1", "counters", 1, 1_000, 1.0),
)}
HEADLINE = "mix-20"


@dataclass
class RunResult:
    system: str
    per_datagram: int
    target_rate: float
    shards: int | None
    sent: float
    offered_per_sec: float
    delivered: float
    delivered_per_sec: float
    elapsed: float
    cpu_seconds: dict[str, float]
    peak_rss_mib: dict[str, float]
    kernel_drops: int
    losses: dict[str, float]
    settled: bool
    #: the share of the system's cores other processes took during the run (a shared machine)
    foreign_cpu_share: float = 0.0
    #: the Load's name
    load: str = ""
    #: lines of every kind sent; ``sent`` and ``delivered`` count counter increments and timer samples
    metrics_sent: float = 0.0
    #: the load generator could not hold the run's traffic and sent part of it again
    ring_wrapped: bool = False
    #: seconds from the end of the load until the system had read and processed everything
    catch_up_s: float = 0.0
    #: a run over one whole flush interval, aligned to the system's flushes (see RatePoint.deciding_runs)
    whole_interval: bool = False
    #: of ``delivered``: the counted items the system's rules dropped (and counted), and those delivered
    #: under a name a rule gave (bench.tally.Totals)
    rule_dropped: float = 0.0
    renamed: float = 0.0

    @property
    def loss_pct(self) -> float:
        return 100.0 * (1 - self.delivered / self.sent) if self.sent else 0.0

    @property
    def generator_limited(self) -> bool:
        return self.offered_per_sec < GENERATOR_SHARE * self.target_rate

    @property
    def kept_up(self) -> bool:
        return self.catch_up_s <= MAX_CATCH_UP_S

    @property
    def disturbed(self) -> bool:
        return self.foreign_cpu_share > DISTURBED_SHARE

    @property
    def metrics_delivered(self) -> float:
        """Lines of every kind delivered, as far as the counted ones tell: the metrics sent less the loss."""
        if not self.metrics_sent or not self.sent:
            return self.delivered
        return self.metrics_sent * self.delivered / self.sent

    def cpu_per_million(self) -> float:
        """CPU seconds of every process of the system per million metrics it delivered."""
        delivered = self.metrics_delivered
        return 1e6 * sum(self.cpu_seconds.values()) / delivered if delivered else math.inf


@dataclass
class RatePoint:
    """Every run at one offered rate; the verdict is the median's."""

    system: str
    per_datagram: int
    target_rate: float
    shards: int | None
    runs: list[RunResult] = field(default_factory=list)
    #: pystatsd's receivers (the first and its SO_REUSEPORT copies)
    receivers: int = 1
    #: the Load's name
    load: str = ""

    @property
    def deciding_runs(self) -> list[RunResult]:
        """The runs the point's figures come from: its whole-interval runs if it has any, else every run.

        A short run under a long flush interval shares one or two flushes among a few seconds of data, so
        its CPU per metric carries several times the flush cost a steady load does; a run over a whole
        interval carries one flush's.
        """
        whole = [run for run in self.runs if run.whole_interval]
        return whole or self.runs

    def median(self, figure: Callable[[RunResult], float]) -> float:
        return statistics.median(figure(run) for run in self.deciding_runs)

    @property
    def passed(self) -> bool:
        return (self.median(lambda run: run.loss_pct) < MAX_LOSS_PCT
                and self.median(lambda run: run.catch_up_s) <= MAX_CATCH_UP_S)

    @property
    def generator_limited(self) -> bool:
        return self.median(lambda run: run.offered_per_sec) < GENERATOR_SHARE * self.target_rate

    def median_run(self) -> RunResult:
        """The run whose loss is the median: its loss breakdown stands for the point's."""
        runs = self.deciding_runs
        return sorted(runs, key=lambda run: run.loss_pct)[len(runs) // 2]


@dataclass
class IdleResult:
    system: str
    seconds: float
    cpu_pct_of_core: dict[str, float]
    peak_rss_mib: dict[str, float]


@dataclass
class DestinationCheck:
    """A system's destinations beside the output delivery is counted at (pystatsd-sinks' servers), read back
    once a load was over: what each holds of the load's counter increments and timer samples, against the
    counted output's total over the same time (from the system's last start)."""

    system: str
    load: str
    delivered: float
    received: dict[str, float]
    #: why the servers could not be read back (then ``received`` is what was read before, or nothing)
    error: str = ""

    @property
    def exact(self) -> bool:
        return not self.error and all(value == self.delivered for value in self.received.values())


@dataclass
class BenchResults:
    meta: dict[str, object]
    sweep: list[RatePoint] = field(default_factory=list)
    scaling: list[RatePoint] = field(default_factory=list)
    idle: list[IdleResult] = field(default_factory=list)
    destinations: list[DestinationCheck] = field(default_factory=list)


def points_of(points: list[RatePoint], system: str, load: str) -> list[RatePoint]:
    """The system's points under this load, by rate."""
    return sorted((p for p in points if p.system == system and p.load == load), key=lambda p: p.target_rate)


def highest_pass(points: list[RatePoint], system: str, load: str) -> float:
    """The highest passing rate below the lowest failing one (a lucky pass above a fail does not count).

    0 when none passed.
    """
    mine = points_of(points, system, load)
    first_fail = min((p.target_rate for p in mine if not p.passed), default=math.inf)
    return max((p.target_rate for p in mine if p.passed and p.target_rate < first_fail), default=0.0)


def proven_rate(point: RatePoint) -> float:
    """What a passing point proves: its target rate, or what the generator managed when it fell short."""
    return point.median(lambda run: run.offered_per_sec) if point.generator_limited else point.target_rate


def load_results(data: dict[str, Any]) -> BenchResults:
    """The results as ``run.py --json`` wrote them (parsed JSON), to render the report again without measuring."""
    def point(item: dict[str, Any]) -> RatePoint:
        runs = [RunResult(**run) for run in item.pop("runs")]
        return RatePoint(**item, runs=runs)

    return BenchResults(
        meta=data["meta"],
        sweep=[point(item) for item in data["sweep"]],
        scaling=[point(item) for item in data["scaling"]],
        idle=[IdleResult(**item) for item in data["idle"]],
        destinations=[DestinationCheck(**item) for item in data.get("destinations", [])],
    )


def point_at(points: list[RatePoint], system: str, load: str, rate: float) -> RatePoint | None:
    return next((p for p in points_of(points, system, load) if p.target_rate == rate), None)


def loads_of(meta: dict[str, Any]) -> list[Load]:
    """The loads a run measured (the parsed JSON of its meta), in the order it measured them."""
    return [Load(**item) for item in meta.get("loads", [])]
