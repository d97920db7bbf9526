"""A stage's own metrics (``<self_metrics_prefix><stage>.*``): one registry for every stage.

Each self-metric is a name, its tags as a mapping, and a kind, as Telegraf's ``selfstat.Register``
has them. A stage keeps its figures in its own plain counters on the hot path and says, once per
report, what they are:

- :meth:`SelfStats.total`: a counter from its running total; the report carries the change since
  the last report, and nothing while it did not change;
- :meth:`SelfStats.add`: a counter's amount for this report (an interval's own count), reported as
  it is, even 0;
- :meth:`SelfStats.gauge`: a value, reported as it is.

Values are reported as floats, whatever number they were given as. The readings leave in the
order they were given, as what the pipeline takes from a stage: the
receiver's as samples into its batch window (:meth:`SelfStats.samples`), a shard's and the
forwarder's as aggregates of the interval just ended (:meth:`SelfStats.aggregates`). With an empty
prefix nothing is reported.

Every reading is checked against its declaration in :mod:`stages.common.self_metrics_table` (name, type,
tag keys). A mismatch is a bug: with ``PYSTATSD_STRICT=1`` in the environment (:mod:`stages.common.strict`:
the test harness sets it for every stage it starts) it raises
:class:`~stages.common.self_metrics_table.UndeclaredSelfMetric`; otherwise it is logged once per name and
reported all the same (a self-metric must never stop a stage).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from stages.common.model import IntervalAggregates, MetricType, Sample, Tags, tag_tuple
from stages.common.self_metrics_table import STAGE_TAGS, Kind, UndeclaredSelfMetric, check
from stages.common.strict import strict_by_default

log = logging.getLogger(__name__)

COUNTER = int(MetricType.COUNTER)
GAUGE = int(MetricType.GAUGE)


class Reading(NamedTuple):
    """One self-metric's value for one report."""

    #: The full name, prefix included.
    name: str
    #: COUNTER (the amount since the previous report) or GAUGE.
    kind: int
    tags: Tags
    value: float


class SelfStats:
    """The self-metrics of one stage process, named ``<prefix><stage>.<name>``.

    ``tags`` go on every one of them (``receiver=<name>``, ``shard=<K>``), and ``defaults`` (the
    config's ``agent.tags``) wherever a metric does not set that tag itself, as on every series.
    """

    def __init__(self, prefix: str, stage: str, tags: Mapping[str, str], defaults: Mapping[str, str],
                 strict: bool | None = None) -> None:
        if sorted(tags) != sorted(STAGE_TAGS.get(stage, ())):
            raise UndeclaredSelfMetric(f"stage {stage!r} is declared with tags {list(STAGE_TAGS.get(stage, ()))}, "
                                       f"given {sorted(tags)} (stages/common/self_metrics.yaml)")
        self.strict = strict_by_default() if strict is None else strict
        #: (name, kind, tag keys) already checked against the table (or already logged as not declared)
        self._checked: set[tuple[str, Kind, tuple[str, ...]]] = set()
        self.enabled = bool(prefix)
        self.stage = stage
        self.prefix = f"{prefix}{stage}."
        self.tags = dict(tags)
        self.defaults = dict(defaults)
        #: (name, tags) → the running total of a counter, as of the last report
        self._totals: dict[tuple[str, Tags], float] = {}
        #: (name, tags) → [kind, value] for the next report, in the order given
        self._pending: dict[tuple[str, Tags], list[Any]] = {}

    def retag(self, prefix: str, defaults: Mapping[str, str]) -> None:
        """A reload's prefix and default tags, from the next report on (running totals carry on)."""
        self.enabled = bool(prefix)
        self.prefix = f"{prefix}{self.stage}."
        self.defaults = dict(defaults)

    def total(self, name: str, total: float, tags: Mapping[str, str] | None = None) -> None:
        """Counter ``name`` has counted ``total`` so far: the next report carries what it added since the last."""
        key = self._key(name, "counter", tags)
        delta = float(total) - self._totals.get(key, 0.0)
        self._totals[key] = float(total)
        if delta:
            self._count(key, delta)

    def add(self, name: str, amount: float, tags: Mapping[str, str] | None = None) -> None:
        """Counter ``name`` counted ``amount`` in this report's interval (reported even when 0)."""
        self._count(self._key(name, "counter", tags), float(amount))

    def gauge(self, name: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Gauge ``name`` is ``value`` now."""
        self._pending[self._key(name, "gauge", tags)] = [GAUGE, float(value)]

    def take(self) -> list[Reading]:
        """Every reading given since the last take, in the order given; none with an empty prefix."""
        pending, self._pending = self._pending, {}
        if not self.enabled:
            return []
        return [Reading(f"{self.prefix}{name}", kind, tags, value) for (name, tags), (kind, value) in pending.items()]

    def samples(self) -> list[Sample]:
        """:meth:`take`, as samples for the receiver's batch window (a counter's amount at rate 1)."""
        return [(reading.name, reading.kind, reading.value, 1.0, reading.tags) for reading in self.take()]

    def aggregates(self, end: float, interval: float) -> list[dict[str, Any]]:
        """:meth:`take`, as aggregates of the interval that ends at ``end`` (a counter with its rate)."""
        make = IntervalAggregates(end, interval).make
        out = []
        for name, kind, tags, value in self.take():
            fields = {"value": value, "rate": value / interval} if kind == COUNTER else {"value": value}
            out.append(make(name, kind, tags, fields))
        return out

    def _key(self, name: str, kind: Kind, tags: Mapping[str, str] | None) -> tuple[str, Tags]:
        merged = {**self.tags, **tags} if tags else self.tags
        keys = tuple(merged)
        if (name, kind, keys) not in self._checked:
            self._check(name, kind, keys)
        return name, tag_tuple(merged, self.defaults)

    def _check(self, name: str, kind: Kind, keys: tuple[str, ...]) -> None:
        try:
            check(self.stage, name, kind, keys)
        except UndeclaredSelfMetric as exc:
            if self.strict:
                raise
            log.error("%s; reported all the same", exc)
        self._checked.add((name, kind, keys))

    def _count(self, key: tuple[str, Tags], amount: float) -> None:
        reading = self._pending.get(key)
        if reading is None:
            self._pending[key] = [COUNTER, amount]
        else:
            reading[1] += amount
