"""``mapping_config``: statsd_exporter 0.31's own mapper test cases, answered as its mapper answers them.

tests/data/statsd_exporter/mapper_cases.json holds every scenario of its pkg/mapper/mapper_test.go
(TestMetricMapperYAML, TestAction), each with what its real mapper gave (regenerate.py beside it
records them): whether the file loads, and per lookup the name, labels, action, ttl and scale.
The cases on Prometheus' summaries and histograms are here for the loading only (their keys are
checked, then ignored). Below them, the cases this port adds: its refusals by key, the sender's
tags, the types statsd_exporter never maps, and the file read from disk.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from stages.common.model import MetricType
from stages.receiver.identity import Decided
from stages.receiver.rules.kind import Outcome, RulesError
from stages.receiver.rules.rule_set import RuleSet
from stages.receiver.rules.statsd_exporter import TTL_GAUGES_ONLY, from_yaml, load

pytestmark = pytest.mark.serverless

CASES = json.loads((Path(__file__).resolve().parents[1] / "data" / "statsd_exporter" / "mapper_cases.json").read_text())
#: The type here for each statsd_exporter event type a case asks with.
TYPES = {"counter": MetricType.COUNTER, "gauge": MetricType.GAUGE, "observer": MetricType.TIMER}


def as_dict(tags: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(tags[::2], tags[1::2], strict=True))


@pytest.mark.parametrize("case", CASES["cases"], ids=[case["test"] for case in CASES["cases"]])
def test_statsd_exporter_s_own_cases(case: dict[str, Any]) -> None:
    if case["refused"]:
        with pytest.raises(RulesError):
            from_yaml(case["config"])
        return
    mapping = from_yaml(case["config"])
    if "action" in case:
        assert mapping.mappings[0].action == case["action"]
    for lookup in case["lookups"]:
        outcome = mapping.decide(lookup["metric"], TYPES[lookup["type"]], ())
        if not lookup["present"]:
            assert outcome is None, lookup
            continue
        assert outcome is not None, lookup
        rule = next(m for m in mapping.mappings if m.rule == outcome.rule)
        assert (rule.ttl, rule.scale) == (lookup["ttl_seconds"], lookup.get("scale")), lookup
        if lookup["action"] == "drop" or not lookup["name"]:
            assert outcome.drop, lookup
            continue
        assert (outcome.name, as_dict(outcome.tags)) == (lookup["name"], lookup["labels"] or {}), lookup
        assert outcome.scale == lookup.get("scale"), lookup  # the windows multiply every value by it


def test_every_case_of_the_go_tests_is_here() -> None:
    assert len(CASES["cases"]) == 66
    assert CASES["source"].startswith("github.com/prometheus/statsd_exporter@v0.31.0 ")


def test_a_glob_that_matches_many_names_formats_each() -> None:
    """TestMultipleMatches: one glob, names that share its captures' places."""
    mapping = from_yaml('mappings:\n- match: aa.bb.*.*\n  name: "aa_bb_${1}_total"\n  labels:\n    app: "$2"\n')
    for middle in ("aa", "bb", "cc", "dd"):
        for _ in range(3):
            outcome = mapping.decide(f"aa.bb.{middle}.myapp", MetricType.COUNTER, ())
            assert outcome == Outcome("mapping_config[0]", f"aa_bb_{middle}_total", ("app", "myapp"))


GLOB_AND_REGEX = """
mappings:
- match: api.drop.*
  action: drop
  name: dropped
- match: "api\\\\.(.*)"
  match_type: regex
  name: "regex_${1}"
- match: api.*.*
  name: api_requests
  labels: {host: "$1", method: "$2", job: api}
- match: api.*.*
  name: never
- match: "db.*"
  name: db_gauge
  match_metric_type: gauge
- match: "db\\\\.(.*)"
  match_type: regex
  match_metric_type: observer
  name: "db_timer"
  labels: {query: "$1"}
- match: honored.*
  name: honored
  honor_labels: true
  labels: {host: "$1"}
"""


@pytest.mark.parametrize(("name", "mtype", "tags", "expected"), [
    # globs before regexes whatever their order; the first of two equal globs wins
    ("api.h7.GET", MetricType.COUNTER, (), ("api_requests", ("host", "h7", "job", "api", "method", "GET"))),
    # a mapping's label replaces the sender's tag of that key, the others stay
    ("api.h7.GET", MetricType.TIMER, ("host", "sent", "zone", "eu"),
     ("api_requests", ("host", "h7", "job", "api", "method", "GET", "zone", "eu"))),
    # unanchored regex, only when no glob matched
    ("xapi.h7", MetricType.COUNTER, (), ("regex_h7", ())),
    ("api.drop.x", MetricType.COUNTER, (), "drop"),
    ("db.users", MetricType.GAUGE, (), ("db_gauge", ())),
    ("db.users", MetricType.GAUGE_DELTA, (), ("db_gauge", ())),
    ("db.users", MetricType.HISTOGRAM, (), ("db_timer", ("query", "users"))),
    ("db.users", MetricType.COUNTER, (), None),
    ("honored.h1", MetricType.COUNTER, ("host", "mine"), ("honored", ("host", "mine"))),
    ("honored.h1", MetricType.COUNTER, (), ("honored", ("host", "h1"))),
    # statsd_exporter refuses sets (and has no traces) before its mapper sees them: not mapped here
    ("api.h7.GET", MetricType.SET, (), None),
    ("api.h7.GET", MetricType.TRACE, (), None),
    ("other", MetricType.COUNTER, ("a", "b"), None),
])
def test_decisions(name: str, mtype: int, tags: tuple[str, ...], expected: Any) -> None:
    outcome = from_yaml(GLOB_AND_REGEX).decide(name, mtype, tags)
    if expected is None or expected == "drop":
        assert (outcome is None) if expected is None else (outcome is not None and outcome.drop)
    else:
        assert outcome is not None and not outcome.drop
        assert (outcome.name, outcome.tags) == expected


def test_a_name_that_expands_to_nothing_drops_the_metric() -> None:
    """statsd_exporter drops such an event (counted as empty_metric_name); it never makes a nameless series."""
    outcome = from_yaml('mappings:\n- match: "x(.*)"\n  match_type: regex\n  name: "$1"\n').decide(
        "x", MetricType.COUNTER, ())
    assert outcome is not None and outcome.drop and outcome.rule == "mapping_config[0]"


#: Files statsd_exporter refuses (tests/e2e/test_statsd_exporter_differential.py has it refuse each), and
#: the place in each that the refusal here names.
REFUSED = [
    ("mappings:\n- match: a.b*\n  name: x", "mappings[0].match"),
    ("mappings:\n- match: a.b\n  name: x\n- match: a.c\n  name: x\n  timer_type: histogram", "mappings[1].timer_type"),
    ("mappings:\n- match: a.b\n  name: x\n  buckets: [1]", "mappings[0].buckets"),
    ("mappings:\n- match: a.b\n  name: x\n  quantiles: []", "mappings[0].quantiles"),
    ("mappings:\n- match: a.b\n  name: x\n  name: y", "mappings[0].name"),
    ("mappings:\n- match: a.b\n  name: x\n  labels: {a: b}", "mappings[0].labels.a"),
    ("mappings:\n- match: a.b\n  name: x\n  labels: {1a: b}", "mappings[0].labels.1a"),
    ("mappings:\n- match: a.b\n  name: x-y", "mappings[0].name"),
    ("mappings:\n- match: a.b", "mappings[0].name"),
    ("mappings:\n- match: (\n  match_type: regex\n  name: x", "mappings[0].match"),
    ("mappings:\n- match: a\n  name: x\n  match_metric_type: set", "mappings[0].match_metric_type"),
    ("mappings:\n- match: a\n  name: x\n  action: keep", "mappings[0].action"),
    ("mappings:\n- match: a\n  name: x\n  ttl: 5 minutes", "mappings[0].ttl"),
    ("mappings:\n- match: a\n  name: x\n  scale: twice", "mappings[0].scale"),
    ("mappings:\n- match: a\n  name: x\n  honor_labels: maybe", "mappings[0].honor_labels"),
    ("mappings:\n- match: a\n  name: x\n  observer_type: histogram\n  summary_options: {max_age: 1m}",
     "mappings[0].summary_options"),
    ("defaults:\n  match_type: fuzzy\nmappings: []", "defaults.match_type"),
    ("defaults:\n  unknown: 1", "defaults.unknown"),
    ("mapping:\n- match: a\n  name: x", "mapping"),
]


@pytest.mark.parametrize(("text", "where"), REFUSED)
def test_refusals_name_the_file_and_the_key(text: str, where: str) -> None:
    with pytest.raises(RulesError) as refused:
        from_yaml(text, source="/etc/m.yml")
    assert refused.value.key == f"mapping_config: /etc/m.yml: {where}"
    assert str(refused.value).startswith(f"mapping_config: /etc/m.yml: {where}: ")


def test_scalars_are_read_as_go_reads_them() -> None:
    mapping = from_yaml("defaults:\n  ttl: 1h30m\n  glob_disable_ordering: yes\nmappings:\n"
                        "- match: a.*\n  name: x\n  labels: {code: 200, flag: true, none: null}\n  scale: 1e3\n"
                        "- match: b.*\n  name: y\n  ttl: 250ms\n")
    first, second = mapping.mappings
    assert first.labels == {"code": "200", "flag": "true", "none": ""}
    assert (first.scale, first.ttl, second.ttl) == (1000.0, 5400.0, 0.25)
    assert mapping.globs is not None and mapping.globs.ordering_disabled


def test_yaml_merges_are_read_as_yaml_v2_reads_them() -> None:
    """A merged mapping's fields stand where the merge does; in labels (a Go map) a key the merge set
    may not be given again: statsd_exporter refuses that file ("already set in map")."""
    mapping = from_yaml("mappings:\n- &base\n  match: a.*\n  name: a_total\n  labels: &labels {app: shop, part: $1}\n"
                        "- <<: *base\n  match: b.*\n  name: b_total\n"
                        "- match: c.*\n  name: c_total\n  labels: {<<: *labels, zone: eu}\n")
    assert [mapping.decide(name, MetricType.COUNTER, ()) for name in ("b.y", "c.z")] == [
        Outcome("mapping_config[1]", "b_total", ("app", "shop", "part", "y")),
        Outcome("mapping_config[2]", "c_total", ("app", "shop", "part", "z", "zone", "eu"))]
    with pytest.raises(RulesError, match=r"^mapping_config: mappings\[1\]\.labels\.ab: given twice"):
        from_yaml("mappings:\n- match: a\n  name: x\n  labels: &l {ab: c}\n- match: b\n  name: y\n"
                  "  labels: {<<: *l, ab: d}\n")


def test_keys_without_meaning_here_are_named_once_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stages.receiver.rules.statsd_exporter"):
        from_yaml("defaults:\n  observer_type: histogram\nmappings:\n"
                  + "".join(f"- match: a{i}.*\n  name: x\n  help: h\n  observer_type: summary\n" for i in range(5)))
    lines = [r.getMessage() for r in caplog.records]
    assert sum("help" in line for line in lines) == 1
    assert sum("observer_type" in line for line in lines) == 1
    assert any("observer_type (defaults, mappings[0], mappings[1] and 3 more)" in line for line in lines)


def test_the_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "mapping.yml").write_text("mappings:\n- match: a.*\n  name: a_total\n  labels: {xx: $1}\n")
    mapping = load("mapping.yml", "mapping_config", tmp_path)
    assert mapping.rule_names() == ["mapping_config[0]"]
    assert mapping.decide("a.b", MetricType.COUNTER, ()) == Outcome("mapping_config[0]", "a_total", ("xx", "b"))
    with pytest.raises(RulesError, match=r"^mapping_config: cannot read .*missing\.yml"):
        load("missing.yml", "mapping_config", tmp_path)
    with pytest.raises(RulesError, match=r"^mapping_config: expected the path"):
        load(3, "mapping_config", tmp_path)


def test_a_mapping_s_scale_goes_with_its_outcome_and_a_scale_that_is_no_finite_number_is_refused() -> None:
    mapping = from_yaml("mappings:\n- match: a.*\n  name: a_total\n  scale: 0.001\n"
                        "- match: b\n  name: b\n  scale: -2\n- match: c.*\n  name: c\n  scale:\n"
                        "- match: d.*\n  name: d\n  action: drop\n  scale: 3\n")
    assert mapping.decide("a.x", MetricType.TIMER, ()) == Outcome("mapping_config[0]", "a_total", (), scale=0.001)
    assert mapping.decide("b", MetricType.GAUGE_DELTA, ()) == Outcome("mapping_config[1]", "b", (), scale=-2.0)
    assert mapping.decide("c.x", MetricType.COUNTER, ()) == Outcome("mapping_config[2]", "c", ())  # null: none
    assert mapping.decide("d.x", MetricType.COUNTER, ()) == Outcome("mapping_config[3]", "d.x", (), drop=True)
    rules = RuleSet([mapping])
    # a series whose identity the mapping leaves as it is is scaled all the same
    assert rules("b", MetricType.GAUGE, ()) == Decided(rules.tally_names().index(("mapped", "mapping_config[1]")),
                                                       None, -2.0)
    for text in (".nan", ".inf", "-.Inf"):
        with pytest.raises(RulesError, match=r"^mapping_config: mappings\[0\]\.scale: .*no finite number"):
            from_yaml(f"mappings:\n- match: a\n  name: x\n  scale: {text}\n")


def test_the_log_names_ttl_as_for_gauges_and_scale_not_at_all(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stages.receiver.rules.statsd_exporter"):
        from_yaml("mappings:\n- match: a.*\n  name: x\n  ttl: 5m\n  scale: 2\n")
    assert [r.getMessage() for r in caplog.records] == [f"mapping_config: ttl (mappings[0]) {TTL_GAUGES_ONLY}"]
