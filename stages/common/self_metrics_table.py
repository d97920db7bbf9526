"""Every self-metric a stage emits, declared once: its name, type, tags and meaning.

:class:`stages.common.selfstats.SelfStats` checks each reading against this table (see
:func:`check`), a unit test checks every call site in the code against it, and the docs' table
(docs/self-metrics.md) is generated from it::

    python -m stages.common.self_metrics_table --write     # docs/self-metrics.md
    python -m stages.common.self_metrics_table --markdown  # the same, on stdout

A metric's full name is ``<self_metrics_prefix><stage>.<name>`` (``pystatsd.`` by default). Its tags
are all it carries besides the config's ``agent.tags`` (which go on every series, self-metrics too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, NamedTuple

Kind = Literal["counter", "gauge"]

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "self-metrics.md"


class SelfMetric(NamedTuple):
    stage: str
    name: str
    kind: Kind
    #: Every tag it carries, the stage's own (``receiver``, ``shard``) first.
    tags: tuple[str, ...]
    meaning: str


class UndeclaredSelfMetric(ValueError):
    """A stage emitted a self-metric this table does not declare, or not as it declares it."""


#: The tags a stage puts on each of its self-metrics (SelfStats' ``tags``).
STAGE_TAGS: dict[str, tuple[str, ...]] = {
    "receiver": ("receiver",), "aggregator": ("shard",), "fleet": ("shard",), "forwarder": (),
}

# In the order the docs list them: by stage as the pipeline runs, then as a reader looks for them.
TABLE: tuple[SelfMetric, ...] = (
    SelfMetric("receiver", "datagrams", "counter", ("receiver",),
               "datagrams read (or reads of complete lines from a stream)"),
    SelfMetric("receiver", "metrics", "counter", ("receiver",),
               "metrics parsed (a DogStatsD packed line is one per value)"),
    SelfMetric("receiver", "bad_lines", "counter", ("receiver", "reason"),
               "lines or JSON objects dropped, by reason"),
    SelfMetric("receiver", "dropped", "counter", ("receiver", "reason", "shard"),
               "metrics a full shard queue cost (`reason=shard_full`)"),
    SelfMetric("receiver", "kernel_drops", "counter", ("receiver",),
               "datagrams the kernel dropped because the receiver's socket buffer was full (the `drops` column "
               "of `/proc/net/udp`), which no `recv` can see"),
    SelfMetric("receiver", "connections_closed", "counter", ("receiver", "reason"),
               "stream connections the receiver closed: `idle_timeout`, or `peer_limit`/`connection_limit` to "
               "make room for a new one"),
    SelfMetric("receiver", "connections_refused", "counter", ("receiver", "reason"),
               "new stream connections closed unread at `peer_limit` or `connection_limit` (their data is lost, "
               "counted here)"),
    SelfMetric("receiver", "rule_mapped", "counter", ("receiver", "rule"),
               "metrics a rule (`rules[3]`) matched and kept, renamed or re-tagged or not, before aggregation: "
               "the rule that decided (with `continue`, the last that matched)"),
    SelfMetric("receiver", "rule_dropped", "counter", ("receiver", "rule"),
               "metrics a rule dropped before aggregation"),
    SelfMetric("receiver", "rule_unmatched", "counter", ("receiver",),
               "metrics no rule matched, kept as sent (only with rules configured)"),
    SelfMetric("aggregator", "metrics", "counter", ("shard",),
               "metrics aggregated (repeats the receiver summed count each)"),
    SelfMetric("aggregator", "series", "gauge", ("shard",),
               "series (aggregates) the shard flushed for the interval"),
    SelfMetric("aggregator", "gauges", "gauge", ("shard",), "live gauges"),
    SelfMetric("aggregator", "flush_ms", "gauge", ("shard",), "time to build the interval's aggregates"),
    SelfMetric("aggregator", "flush_overruns", "counter", ("shard",),
               "flushes handed to the forwarder more than an interval after they were due (the next interval's "
               "flush was due first): the shard is falling behind; each is logged with its lateness and size "
               "(reported with the next interval)"),
    SelfMetric("aggregator", "dropped_gauges", "counter", ("shard",),
               "new gauges dropped at `gauges_limit`, once per interval each came in"),
    SelfMetric("aggregator", "late_metrics", "counter", ("shard",),
               "metrics that arrived after their interval closed (folded into the next)"),
    SelfMetric("aggregator", "overflow_series", "counter", ("shard", "metric"),
               "series folded into `metric`'s overflow series (the 10 names folded most, per interval)"),
    SelfMetric("aggregator", "lost_batches", "counter", ("shard", "src"),
               "batches lost between receiver and shard (sequence gaps)"),
    SelfMetric("aggregator", "lost_metrics", "counter", ("shard", "src"), "the metrics those batches carried"),
    SelfMetric("aggregator", "handoffs_refused", "counter", ("shard",),
               "hand-off files of a restarted shard's last instance that this one refused (foreign, or older "
               "than `expire_after_intervals` intervals): what they held counts as lost in the ledger"),
    SelfMetric("fleet", "hosts", "gauge", ("shard",), "edge hosts whose partials the interval merged"),
    SelfMetric("fleet", "aggregates", "gauge", ("shard",), "aggregates the fleet shard flushed for the interval"),
    SelfMetric("fleet", "partials", "counter", ("shard",), "edge partials merged"),
    SelfMetric("fleet", "duplicate_partials", "counter", ("shard",),
               "partials seen twice (an edge that sent a flush again) and merged once"),
    SelfMetric("fleet", "late_partials", "counter", ("shard", "host"),
               "partials that came after their interval was flushed, by edge host (merged as a correction "
               "with `late: merge`, else dropped)"),
    SelfMetric("fleet", "late_dropped", "counter", ("shard",),
               "late partials dropped (`late: drop`, or past `late_max_seconds`)"),
    SelfMetric("fleet", "bad_partials", "counter", ("shard", "reason"),
               "Kafka records dropped that are not partials of this fleet, by reason"),
    SelfMetric("forwarder", "delivered", "counter", ("sink",),
               "aggregates a sink delivered (`sink`: its name under `forwarders:`, its kind's in the original form; "
               "two sinks of one kind are two names)"),
    SelfMetric("forwarder", "errors", "counter", ("sink",),
               "failed writes (each retried, or dropped and counted below)"),
    SelfMetric("forwarder", "dropped", "counter", ("sink", "reason"),
               "aggregates a sink dropped (`buffer_full`, `rejected`, `error`, `shutdown`; `removed`: what a sink "
               "a reload removed could not deliver in its drain)"),
    SelfMetric("forwarder", "waiting", "gauge", ("sink",), "aggregates waiting for a sink"),
    SelfMetric("forwarder", "lost_flushes", "counter", (), "flushes lost between shards and forwarder (sequence gaps)"),
    SelfMetric("forwarder", "lost_metrics", "counter", ("shard",),
               "metrics that never reached the sinks: held by a receiver, a shard or a forwarder that crashed, or "
               "lost on the way (the loss ledger; it includes what `pystatsd.aggregator.lost_metrics` counts, so "
               "add neither to the other)"),
    SelfMetric("forwarder", "lost_batches", "counter", ("shard",), "the receiver batches those metrics were in"),
)

DECLARED: dict[tuple[str, str], SelfMetric] = {(metric.stage, metric.name): metric for metric in TABLE}


def check(stage: str, name: str, kind: Kind, tags: Iterable[str]) -> SelfMetric:
    """The declaration of ``stage``'s ``name``; UndeclaredSelfMetric, naming it, when there is none or
    the reading's kind or tag keys (the stage's own included, ``agent.tags`` not) differ from it."""
    metric = DECLARED.get((stage, name))
    if metric is None:
        raise UndeclaredSelfMetric(f"self-metric {stage}.{name} is not declared in stages/common/self_metrics_table.py")
    if kind != metric.kind:
        raise UndeclaredSelfMetric(f"self-metric {stage}.{name} is declared a {metric.kind}, emitted as a {kind}")
    if sorted(tags) != sorted(metric.tags):
        raise UndeclaredSelfMetric(f"self-metric {stage}.{name} is declared with tags {sorted(metric.tags)}, "
                                   f"emitted with {sorted(tags)}")
    return metric


def markdown(prefix: str = "pystatsd.") -> str:
    """docs/self-metrics.md: the table, for the default prefix."""
    lines = [
        "# The daemon's own metrics",
        "",
        "<!-- Generated by `python -m stages.common.self_metrics_table --write` from "
        "stages/common/self_metrics_table.py; edit that table, not this file. -->",
        "",
        "Unless `self_metrics_prefix` is `\"\"`, each stage adds its own figures to the stream every interval",
        "(the receiver's go to the shards as any metric, a shard's go in its flush, a fleet-tier shard's as",
        "`fleet.*` in its flush, the forwarder's go to the sinks as a flush of their own). A *metric* is one",
        "value a client sent (a statsd line, say); a batch *entry* is one series' values accumulated in a",
        "batch, so one entry may stand for many metrics. Besides the tags below, each carries the config's",
        "`agent.tags`.",
        "",
        "| name | type | tags | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for metric in TABLE:
        tags = ", ".join(f"`{tag}`" for tag in metric.tags)
        lines.append(f"| `{prefix}{metric.stage}.{metric.name}` | {metric.kind} | {tags} | {metric.meaning} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.common.self_metrics_table",
                                     description="The self-metrics table as Markdown.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print it")
    action.add_argument("--write", action="store_true", help=f"write it to {DOC_PATH.parent.name}/{DOC_PATH.name}")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        DOC_PATH.parent.mkdir(exist_ok=True)
        DOC_PATH.write_text(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
