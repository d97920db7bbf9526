"""``mapping_config: PATH``: a statsd_exporter mapping file, loaded unchanged, mapping as statsd_exporter
0.31 maps (its ``pkg/mapper``).

What it does there, it does here: ``defaults:`` and ``mappings:``; globs (:mod:`.statsd_exporter_glob`,
its FSM) are tried first, whatever their place in the file, then the regexes (unanchored, Go's
syntax, ``$n`` expanded as Go expands it) in file order; ``match_metric_type`` picks ``counter``,
``gauge`` (a gauge change too) or ``observer`` (timer, histogram, distribution); ``action: drop``
drops; ``labels`` are added to the sender's own tags, replacing a tag of the same key unless
``honor_labels``; a mapping whose name expands to "" drops the metric (statsd_exporter counts it as
``empty_metric_name`` and drops it). Sets and traces are never mapped: statsd_exporter refuses
them before its mapper sees them, so here they pass unchanged, as an unmatched metric does.

It refuses what statsd_exporter refuses: an unknown or repeated key, a glob that is not whole
dot-separated components (``a*.b``), a bad metric or label name, a missing name, a regex Go does
not take, a histogram observer with summary options (and the reverse), a bad enum value.

Two differences, both because pystatsd is no Prometheus exporter: an unmatched metric keeps its
name as sent, and a mapped one the name its mapping gives, not escaped (statsd_exporter turns
every character Prometheus refuses into ``_``; each sink here writes names as its backend wants).
Keys that shape Prometheus' summaries and histograms (``observer_type``, ``summary_options``,
``histogram_options``) and ``help`` are checked, then ignored, named once in the log. ``scale``
applies as there: the outcome carries it and the receiver's windows multiply every value of the
series by it (:mod:`stages.receiver.identity`); a scale that is not a finite number is refused (it
would make every value NaN or infinite). ``ttl`` (the mapping's, else the default's) applies to
gauges: the outcome carries it, the windows hand it with the gauge's batch and the shard forgets the
gauge once idle for ``ceil(ttl / flush_interval)`` intervals instead of ``expire_after_intervals``.
statsd_exporter's ttl forgets a series of any type; here only a gauge outlives the interval it was
updated in, so only a gauge has anything to forget, and the log says so once (:data:`TTL_GAUGES_ONLY`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.common.model import MetricType, Tags, tag_tuple

from . import statsd_exporter_yaml as y
from .kind import Outcome, RulesError
from .regex import compile_regex, expand
from .statsd_exporter_glob import GlobFSM, TemplateFormatter, backtracking_needed

log = logging.getLogger(__name__)

#: What a glob may be (metricLineRE): ``*`` or a name per component, the first not starting with a digit.
_GLOB = compile_regex(r"^(\*|[a-zA-Z_]([a-zA-Z0-9_\-])*)(\.\*|\.[a-zA-Z0-9_]([a-zA-Z0-9_\-])*)*$", "glob", False)
#: What a mapping's name may be (metricNameRE): a Prometheus name in which ``$n``/``${n}`` may stand.
_NAME = compile_regex(r"^([a-zA-Z_]|(\$\{?\d+\}?))([a-zA-Z0-9_]|(\$\{?\d+\}?))*$", "name", False)
#: What a label's name may be (labelNameRE: two characters at least, as statsd_exporter has it).
_LABEL = compile_regex(r"^[a-zA-Z_][a-zA-Z0-9_]+$", "label", False)

#: statsd_exporter's event type for each type here; a set or a trace is none of them.
EVENT_TYPES: dict[int, str] = {
    MetricType.COUNTER: "counter",
    MetricType.GAUGE: "gauge",
    MetricType.GAUGE_DELTA: "gauge",
    MetricType.TIMER: "observer",
    MetricType.HISTOGRAM: "observer",
    MetricType.DISTRIBUTION: "observer",
}

_SUMMARY_KEYS = {"quantiles", "max_age", "age_buckets", "buf_cap"}
_HISTOGRAM_KEYS = {"buckets", "native_histogram_bucket_factor", "native_histogram_max_buckets"}
_DEFAULTS_KEYS = {"observer_type", "match_type", "glob_disable_ordering", "ttl", "summary_options",
                  "histogram_options"}
_MAPPING_KEYS = {"match", "name", "labels", "honor_labels", "observer_type", "match_type", "help", "action",
                 "match_metric_type", "ttl", "summary_options", "histogram_options", "scale"}
#: Keys checked and then ignored: they shape what Prometheus shows, and pystatsd shows no Prometheus.
IGNORED_KEYS = ("observer_type", "summary_options", "histogram_options", "help")
#: Keys that apply with a difference the log names (see the module's docs).
KEPT_KEYS = ("ttl",)
#: What the log says of ``ttl``.
TTL_GAUGES_ONLY = ("applies to gauges: one idle for ceil(ttl / flush_interval) intervals is forgotten instead of "
                   "after expire_after_intervals (other types are sent only for the intervals they are updated in)")


def _match_type(text: str) -> str | None:
    return {"regex": "regex", "glob": "glob", "": "glob"}.get(text)


def _action(text: str) -> str | None:
    return {"drop": "drop", "map": "map", "": "map"}.get(text)


def _observer_type(text: str) -> str | None:
    return {"histogram": "histogram", "summary": "summary", "": "summary"}.get(text)


def _metric_type(text: str) -> str | None:
    return text if text in ("counter", "gauge", "observer") else None


@dataclasses.dataclass(slots=True)
class Mapping:
    """One entry of ``mappings:``, decoded and checked."""

    rule: str
    match: str = ""
    name: str = ""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    honor_labels: bool = False
    match_type: str = ""
    action: str = ""
    match_metric_type: str = ""
    observer_type: str = ""
    help: str = ""
    #: whether ``summary_options`` / ``histogram_options`` are given (checked, not used here)
    summary_options: bool = False
    histogram_options: bool = False
    #: statsd_exporter's ``ttl`` in seconds (0 or less: none), the default's when the mapping sets none.
    ttl: float = 0.0
    #: statsd_exporter's ``scale``: each value times this; None when not set.
    scale: float | None = None
    regex: Any = None
    name_format: TemplateFormatter | None = None
    label_formats: list[tuple[str, TemplateFormatter]] = dataclasses.field(default_factory=list)


class StatsdExporterMapping:
    """The mappings of one file, deciding per series as statsd_exporter's ``GetMapping`` does."""

    def __init__(self, mappings: list[Mapping], globs: GlobFSM | None) -> None:
        self.mappings = mappings
        self.globs = globs
        self.regexes = [m for m in mappings if m.regex is not None]

    def rule_names(self) -> list[str]:
        return [m.rule for m in self.mappings]

    def decide(self, name: str, mtype: int, tags: Tags, /) -> Outcome | None:
        event_type = EVENT_TYPES.get(mtype)
        if event_type is None:
            return None
        found = self._find(name, event_type)
        if found is None:
            return None
        mapping, new_name, labels = found
        if mapping.action == "drop" or not new_name:
            return Outcome(mapping.rule, name, tags, drop=True)
        merged = dict(zip(tags[::2], tags[1::2], strict=True))
        for label, value in labels.items():
            if not (mapping.honor_labels and label in merged):
                merged[label] = value
        return Outcome(mapping.rule, new_name, tag_tuple(merged, {}), scale=mapping.scale,
                       ttl=mapping.ttl if mapping.ttl > 0 else None)

    def _find(self, name: str, event_type: str) -> tuple[Mapping, str, dict[str, str]] | None:
        if self.globs is not None:
            mapping, captures = self.globs.lookup(name, event_type)
            if mapping is not None:
                assert mapping.name_format is not None
                labels = {label: fmt.format(name, captures) for label, fmt in mapping.label_formats}
                return mapping, mapping.name_format.format(name, captures), labels
        for mapping in self.regexes:
            match = mapping.regex.search(name)
            if match is None or (mapping.match_metric_type and mapping.match_metric_type != event_type):
                continue
            labels = {label: expand(template, match) for label, template in mapping.labels.items()}
            return mapping, expand(mapping.name, match), labels
        return None


def load(raw: Any, key: str, config_dir: Path) -> StatsdExporterMapping:
    """The mapping file named by ``raw`` (relative to ``config_dir``); a refusal names ``key``, the file
    and the place in it (``mapping_config: /etc/m.yml: mappings[2].name``)."""
    if not isinstance(raw, str) or not raw:
        raise RulesError(key, f"expected the path of a statsd_exporter mapping file, not {raw!r}")
    path = config_dir / raw
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(key, f"cannot read {path}: {exc}") from None
    return from_yaml(text, key, str(path))


def from_yaml(text: str, key: str = "mapping_config", source: str = "") -> StatsdExporterMapping:
    """The mappings of a file's ``text``; rules are named ``key[i]``, refusals ``key: source: where``."""
    where = f"{key}: {source}" if source else key
    try:
        return _build(text, key)
    except RulesError as exc:
        raise RulesError(f"{where}: {exc.key}", str(exc)[len(exc.key) + 2:]) from None


def _build(text: str, key: str) -> StatsdExporterMapping:
    defaults, mappings = _decode(y.compose(text, "file"), key)
    match_type_default = defaults.match_type or "glob"
    globs = GlobFSM(defaults.glob_disable_ordering)
    glob_patterns: list[str] = []
    remaining = len(mappings)
    for i, mapping in enumerate(mappings):
        remaining -= 1
        at = f"mappings[{i}]"
        for label in mapping.labels:
            if not _LABEL.search(label):
                raise RulesError(f"{at}.labels.{label}", "invalid label name (a letter or _, then at least one "
                                 "letter, digit or _)")
        if not mapping.name:
            raise RulesError(f"{at}.name", "missing: a mapping must set a metric name")
        if not _NAME.search(mapping.name):
            raise RulesError(f"{at}.name", f"{mapping.name!r} is no metric name (letters, digits, _ and $n)")
        mapping.match_type = mapping.match_type or match_type_default
        mapping.action = mapping.action or "map"
        if mapping.match_type == "glob":
            if not _GLOB.search(mapping.match):
                raise RulesError(f"{at}.match", f"invalid glob {mapping.match!r}: each dot-separated component is "
                                 "* or a name, never part of one")
            captures = globs.add(mapping.match, mapping.match_metric_type, mapping)
            glob_patterns.append(mapping.match)
            mapping.name_format = TemplateFormatter(mapping.name, captures)
            mapping.label_formats = [(k, TemplateFormatter(v, captures)) for k, v in mapping.labels.items()]
        else:
            mapping.regex = compile_regex(mapping.match or "(?:)", f"{at}.match", anchored=False)
        mapping.observer_type = mapping.observer_type or defaults.observer_type
        if mapping.observer_type == "histogram" and mapping.summary_options:
            raise RulesError(f"{at}.summary_options", "cannot be used with the histogram observer_type")
        if mapping.observer_type == "summary" and mapping.histogram_options:
            raise RulesError(f"{at}.histogram_options", "cannot be used with the summary observer_type")
        if mapping.ttl == 0 and defaults.ttl > 0:
            mapping.ttl = defaults.ttl
    if not glob_patterns:
        return StatsdExporterMapping(mappings, None)
    globs.backtracking_needed = backtracking_needed(glob_patterns, globs.ordering_disabled)
    return StatsdExporterMapping(mappings, globs)


@dataclasses.dataclass(slots=True)
class _Defaults:
    observer_type: str = ""
    match_type: str = ""
    glob_disable_ordering: bool = False
    ttl: float = 0.0
    summary_options: bool = False
    histogram_options: bool = False


def _decode(root: Any, key: str) -> tuple[_Defaults, list[Mapping]]:
    """The file's ``defaults:`` and ``mappings:`` as yaml.v2 decodes them, unknown keys refused; logs
    once each key that has no meaning here."""
    defaults, mappings = _Defaults(), []
    seen: dict[str, list[str]] = {}
    for field, node in y.fields(root, "", {"defaults", "mappings"}):
        if field == "defaults":
            _decode_fields(node, "defaults", _DEFAULTS_KEYS, defaults, seen)
        else:
            for i, item in enumerate(y.items(node, "mappings")):
                mappings.append(Mapping(f"{key}[{i}]"))
                _decode_fields(item, f"mappings[{i}]", _MAPPING_KEYS, mappings[-1], seen)
    for name in (*IGNORED_KEYS, *KEPT_KEYS):
        if name in seen:
            what = "has no meaning in pystatsd: ignored" if name in IGNORED_KEYS else TTL_GAUGES_ONLY
            places = seen[name]
            more = f" and {len(places) - 3} more" if len(places) > 3 else ""
            log.warning("%s: %s (%s%s) %s", key, name, ", ".join(places[:3]), more, what)
    return defaults, mappings


def _decode_fields(node: Any, at: str, known: set[str], target: Any, seen: dict[str, list[str]]) -> None:
    """Sets each field of ``target`` (a :class:`Mapping` or the defaults) that ``node`` gives, its attribute
    named as its key."""
    for field, value in y.fields(node, at, known):
        if field in IGNORED_KEYS or field in KEPT_KEYS:
            seen.setdefault(field, []).append(at)
        setattr(target, field, _READERS[field](value, f"{at}.{field}"))


def _finite(number: float, at: str) -> float:
    """``number`` when finite: a scale of NaN or an infinity would make every value it scales so."""
    if not math.isfinite(number):
        raise RulesError(at, f"{number!r} is no finite number (it would make every value it scales so)")
    return number


def _decode_summary(node: Any, at: str) -> bool:
    """Checks ``summary_options``; whether it is given."""
    for field, value in y.fields(node, at, _SUMMARY_KEYS):
        where = f"{at}.{field}"
        if field == "quantiles":
            for i, item in enumerate(y.items(value, where)):
                for name, number in y.fields(item, f"{where}[{i}]", {"quantile", "error"}):
                    y.number(number, f"{where}[{i}].{name}")
        elif field == "max_age":
            y.duration(value, where)
        else:
            y.integer(value, where, 0, (1 << 32) - 1)
    return not y.is_null(node)


def _decode_histogram(node: Any, at: str) -> bool:
    """Checks ``histogram_options``; whether it is given."""
    for field, value in y.fields(node, at, _HISTOGRAM_KEYS):
        where = f"{at}.{field}"
        if field == "buckets":
            y.numbers(value, where)
        elif field == "native_histogram_bucket_factor":
            y.number(value, where)
        else:
            y.integer(value, where, 0, (1 << 32) - 1)
    return not y.is_null(node)


#: How each key of ``defaults:`` and of a mapping is read.
_READERS: dict[str, Callable[[Any, str], Any]] = {
    "match": y.string,
    "name": y.string,
    "help": y.string,
    "labels": y.string_map,
    "honor_labels": y.boolean,
    "glob_disable_ordering": y.boolean,
    "observer_type": lambda node, at: y.choice(node, at, _observer_type),
    "match_type": lambda node, at: y.choice(node, at, _match_type),
    "action": lambda node, at: y.choice(node, at, _action),
    "match_metric_type": lambda node, at: y.choice(node, at, _metric_type),
    "ttl": y.duration,
    "scale": lambda node, at: None if y.is_null(node) else _finite(y.number(node, at), at),
    "summary_options": _decode_summary,
    "histogram_options": _decode_histogram,
}
