"""What the benchmark measured: runs, rate points, idle figures, and the verdicts drawn from them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

#: A rate passes when the median loss of its runs is under this.
MAX_LOSS_PCT = 0.1
#: The generator counts as keeping up when it offered at least this share of the target rate.
GENERATOR_SHARE = 0.97
#: A run during which other processes took more than this share of the system's cores is disturbed.
DISTURBED_SHARE = 0.05


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

    @property
    def loss_pct(self) -> float:
        return 100.0 * (1 - self.delivered / self.sent) if self.sent else 0.0

    @property
    def generator_limited(self) -> bool:
        return self.offered_per_sec < GENERATOR_SHARE * self.target_rate

    @property
    def disturbed(self) -> bool:
        return self.foreign_cpu_share > DISTURBED_SHARE

    def cpu_per_million(self) -> float:
        """CPU seconds of every process of the system per million metrics it delivered."""
        return 1e6 * sum(self.cpu_seconds.values()) / self.delivered if self.delivered else math.inf


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

    def median(self, figure: Callable[[RunResult], float]) -> float:
        return statistics.median(figure(run) for run in self.runs)

    @property
    def passed(self) -> bool:
        return self.median(lambda run: run.loss_pct) < MAX_LOSS_PCT

    @property
    def generator_limited(self) -> bool:
        return self.median(lambda run: run.offered_per_sec) < GENERATOR_SHARE * self.target_rate

    def median_run(self) -> RunResult:
        """The run whose loss is the median: its loss breakdown stands for the point's."""
        return sorted(self.runs, key=lambda run: run.loss_pct)[len(self.runs) // 2]


@dataclass
class IdleResult:
    system: str
    seconds: float
    cpu_pct_of_core: dict[str, float]
    peak_rss_mib: dict[str, float]


@dataclass
class BenchResults:
    meta: dict[str, object]
    sweep: list[RatePoint] = field(default_factory=list)
    scaling: list[RatePoint] = field(default_factory=list)
    idle: list[IdleResult] = field(default_factory=list)


def points_of(points: list[RatePoint], system: str, per_datagram: int) -> list[RatePoint]:
    """The system's points at this datagram size, by rate."""
    return sorted((p for p in points if p.system == system and p.per_datagram == per_datagram),
                  key=lambda p: p.target_rate)


def highest_pass(points: list[RatePoint], system: str, per_datagram: int) -> float:
    """The highest passing rate below the lowest failing one (a lucky pass above a fail does not count).

    0 when none passed.
    """
    mine = points_of(points, system, per_datagram)
    first_fail = min((p.target_rate for p in mine if not p.passed), default=math.inf)
    return max((p.target_rate for p in mine if p.passed and p.target_rate < first_fail), default=0.0)


def proven_rate(point: RatePoint) -> float:
    """What a passing point proves: its target rate, or what the generator managed when it fell short."""
    return point.median(lambda run: run.offered_per_sec) if point.generator_limited else point.target_rate


def load_results(data: dict[str, object]) -> BenchResults:
    """The results as ``run.py --json`` wrote them, to render the report again without measuring."""
    def point(item: dict) -> RatePoint:
        runs = [RunResult(**run) for run in item.pop("runs")]
        return RatePoint(**item, runs=runs)

    return BenchResults(
        meta=data["meta"],  # type: ignore[arg-type]
        sweep=[point(item) for item in data["sweep"]],  # type: ignore[attr-defined]
        scaling=[point(item) for item in data["scaling"]],  # type: ignore[attr-defined]
        idle=[IdleResult(**item) for item in data["idle"]],  # type: ignore[attr-defined]
    )


def point_at(points: list[RatePoint], system: str, per_datagram: int, rate: float) -> RatePoint | None:
    return next((p for p in points_of(points, system, per_datagram) if p.target_rate == rate), None)
