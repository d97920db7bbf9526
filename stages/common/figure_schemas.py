"""What each stage publishes as its figures (stages.rundir.figures), declared once: keys and types per stage.

Each publisher builds its figures as one of these TypedDicts (mypy checks the keys and types it
writes), :func:`stages.rundir.figures.publish` records the schema's name beside them and checks them
against it (:func:`problems`), and ``pystatsd status`` reads a record through :func:`figures_of`,
which hands back typed figures only when they are as declared (an older stage's, during an upgrade
by restart, may not be).
"""

from __future__ import annotations

import functools
import types
from typing import Any, Literal, TypedDict, TypeVar, Union, cast, get_args, get_origin, get_type_hints, is_typeddict

T = TypeVar("T")


class RelayFigures(TypedDict):
    #: datagrams the kernel took for the destination
    datagrams: int
    #: reason → lines not relayed (none: left out)
    dropped: dict[str, int]


class ReceiverFigures(TypedDict):
    listeners: list[str]
    datagrams: int
    metrics: int
    #: reason → lines dropped
    bad_lines: dict[str, int]
    kernel_drops: int
    #: shard → metrics a full queue to it cost (shards that cost none left out)
    dropped_shard_full: dict[str, int]
    connections: int
    connections_refused: dict[str, int]
    connections_closed: dict[str, int]
    #: metrics the rules seam dropped (stages/receiver/identity.py)
    rule_dropped: int
    #: metrics no rule matched (0 without rules)
    rule_unmatched: int
    #: rule (``rules[3]``) → outcome (``mapped``, ``dropped``) → metrics it decided so far (none: left out)
    rules: dict[str, dict[str, int]]
    #: relay destination (``host:port``) → what it was sent and lost (no ``relay:``: empty)
    relay: dict[str, RelayFigures]


class NameFigure(TypedDict):
    name: str
    #: metrics a second its series received: one per value a client sent, of every type (stages/aggregator/busiest.py)
    rate: float
    #: series it had in the interval
    series: int
    #: series series_limit_per_name folded into its overflow series in the interval
    folded: int


class TagValueFigure(TypedDict):
    value: str
    rate: float
    series: int


class BusiestFigures(TypedDict):
    """The last interval's busiest names and tag values, bounded (``pystatsd top`` reads them)."""

    interval: float
    series_limit: int
    names: list[NameFigure]
    #: tag key → its busiest values
    tags: dict[str, list[TagValueFigure]]


class ShardFigures(TypedDict):
    shard: int
    aggregates: int
    metrics: int
    gauges: int
    held_flushes: int
    dropped_flushes: int
    #: reason → messages that were not batches
    bad_messages: dict[str, int]
    busiest: BusiestFigures


class FleetFigures(TypedDict):
    shard: int
    input: Literal["kafka"]
    topic: str
    group: str
    partitions: list[int]
    lag: int
    #: partition → records behind
    lag_by_partition: dict[str, int]
    open_intervals: int
    intervals_closed: int
    last_interval: float | None
    hosts: list[str]
    hosts_gone: list[str]
    #: interval start → hosts heard in it
    hosts_per_interval: dict[str, int]
    partials: int
    duplicate_partials: int
    #: host → late partials
    late_partials: dict[str, int]
    late_dropped: int
    redelivered_skipped: int
    bad_partials: dict[str, int]
    waiting_delivery: int


class SinkFigures(TypedDict):
    delivered: int
    waiting: int
    #: reason → aggregates dropped
    dropped: dict[str, int]
    errors: int
    #: why it is failing, or None
    failing: str | None
    #: a reload took it out (it drains what it held)
    removed: bool


class ForwarderFigures(TypedDict):
    sinks: dict[str, SinkFigures]
    lost_metrics: int
    lost_flushes: int
    bad_messages: int


class StartErrorFigures(TypedDict):
    #: why the stage could not start (its error line)
    start_error: str


Schema = Literal["receiver", "aggregator", "fleet", "forwarder", "start_error"]
SCHEMAS: dict[str, type] = {"receiver": ReceiverFigures, "aggregator": ShardFigures, "fleet": FleetFigures,
                            "forwarder": ForwarderFigures, "start_error": StartErrorFigures}


def problems(schema: str, figures: object) -> list[str]:
    """How ``figures`` differ from ``schema``'s declaration, each naming the key; empty when they do not."""
    declared = SCHEMAS.get(schema)
    if declared is None:
        return [f"no schema {schema!r} in stages/common/figure_schemas.py"]
    return _problems(declared, figures, schema)


def figures_of(record: dict[str, Any], declared: type[T]) -> T | None:
    """A published record's figures as ``declared`` (one of SCHEMAS), when the record says it has
    those and they are as declared; else None."""
    schema = next(name for name, kind in SCHEMAS.items() if kind is declared)
    if record.get("schema") != schema or problems(schema, record.get("figures")):
        return None
    return cast(T, record["figures"])


def _problems(declared: Any, value: object, where: str) -> list[str]:
    if is_typeddict(declared):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        hints = _hints(declared)
        found = [f"{where}.{key}: missing" for key in hints if key not in value]
        found += [f"{where}.{key}: not declared" for key in value if key not in hints]
        for key, hint in hints.items():
            if key in value:
                found += _problems(hint, value[key], f"{where}.{key}")
        return found
    origin, args = get_origin(declared), get_args(declared)
    if origin in (Union, types.UnionType):
        options = [_problems(option, value, where) for option in args]
        return [] if any(not option for option in options) else [f"{where}: {value!r} is not {declared}"]
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        return [problem for i, item in enumerate(value) for problem in _problems(args[0], item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        return [problem for key, item in value.items()
                for problem in (_problems(args[0], key, f"{where} key {key!r}")
                                + _problems(args[1], item, f"{where}[{key!r}]"))]
    return [] if _is(declared, value) else [f"{where}: {value!r} is not {getattr(declared, '__name__', declared)}"]


@functools.cache
def _hints(declared: type) -> dict[str, Any]:
    """A TypedDict's keys and types, evaluated once (publish checks figures every interval)."""
    return get_type_hints(declared)


def _is(declared: Any, value: object) -> bool:
    """A plain type: bool is not an int here, an int is a float (JSON writes 2.0 as 2.0, 2 as 2)."""
    if declared is type(None):
        return value is None
    if declared is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if declared is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, declared)
