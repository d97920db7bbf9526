"""The self-metrics table: every emitter in the code matches it, SelfStats enforces it, the docs come from it."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from stages.common.self_metrics_table import (
    DOC_PATH,
    STAGE_TAGS,
    TABLE,
    Kind,
    UndeclaredSelfMetric,
    check,
    main,
    markdown,
)
from stages.common.selfstats import SelfStats
from stages.common.strict import STRICT_ENV

STAGES = Path(__file__).resolve().parents[2] / "stages"
#: Which stage's SelfStats the calls in a file feed, the first prefix that matches (paths under stages/).
STAGE_OF_FILE = (("aggregator/fleet/", "fleet"), ("aggregator/", "aggregator"), ("receiver/", "receiver"),
                 ("forwarder/", "forwarder"))
EMIT: dict[str, Kind] = {"total": "counter", "add": "counter", "gauge": "gauge"}


def emitter_calls(source: str) -> list[tuple[ast.Call, Kind]]:
    """Calls of ``<...>stats.total/add/gauge(...)`` (a SelfStats' three ways to emit), each with its type."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in EMIT:
            owner = node.func.value
            if (isinstance(owner, ast.Name) and owner.id == "stats") or (
                    isinstance(owner, ast.Attribute) and owner.attr == "stats"):
                calls.append((node, EMIT[node.func.attr]))
    return calls


def problems_in(source: str, stage: str, where: str, used: set[tuple[str, str]] | None = None) -> list[str]:
    """What in ``source`` does not match the table: a name not a literal, tags not a literal dict, or a
    name, type or tag set the table does not declare for ``stage``."""
    problems = []
    for call, kind in emitter_calls(source):
        at = f"{where}:{call.lineno}"
        name = call.args[0] if call.args else None
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            problems.append(f"{at}: a self-metric's name must be a literal string")
            continue
        tags_arg = call.args[2] if len(call.args) > 2 else next(
            (keyword.value for keyword in call.keywords if keyword.arg == "tags"), None)
        keys = list(STAGE_TAGS[stage])
        if tags_arg is not None:
            if not (isinstance(tags_arg, ast.Dict) and all(
                    isinstance(key, ast.Constant) and isinstance(key.value, str) for key in tags_arg.keys)):
                problems.append(f"{at}: {name.value}'s tags must be a dict literal with literal keys")
                continue
            keys += [key.value for key in tags_arg.keys if isinstance(key, ast.Constant)]
        try:
            check(stage, name.value, kind, keys)
        except UndeclaredSelfMetric as exc:
            problems.append(f"{at}: {exc}")
        if used is not None:
            used.add((stage, name.value))
    return problems


def stage_of(relative: str) -> str | None:
    return next((stage for prefix, stage in STAGE_OF_FILE if relative.startswith(prefix)), None)


def test_every_self_metric_the_code_emits_is_declared_and_every_declared_one_is_emitted() -> None:
    problems: list[str] = []
    used: set[tuple[str, str]] = set()
    for path in sorted(STAGES.rglob("*.py")):
        relative = path.relative_to(STAGES).as_posix()
        source = path.read_text()
        if not emitter_calls(source):
            continue
        stage = stage_of(relative)
        if stage is None:
            problems.append(f"stages/{relative} emits self-metrics but STAGE_OF_FILE does not say for which stage")
            continue
        problems += problems_in(source, stage, f"stages/{relative}", used)
    assert problems == []
    assert {(metric.stage, metric.name) for metric in TABLE} - used == set(), "declared but never emitted"
    # What the issue counted: the receiver's 7 (and the rules' 3), a shard's 11 (handoffs_refused too), the
    # fleet's 7, the forwarder's 7. Then records (events, service checks): the receiver's records and
    # records_dropped, the forwarder's records_without_sink. The raw relay: relay_datagrams, relay_dropped.
    assert [sum(metric.stage == stage for metric in TABLE) for stage in STAGE_TAGS] == [14, 11, 7, 8]


def test_the_scan_catches_an_undeclared_name_a_wrong_type_wrong_tags_and_a_name_it_cannot_read() -> None:
    source = '''
def report(self, stats):
    stats.total("metrics", 1)
    self.stats.total("brand_new", 1)
    self.state.stats.gauge("metrics", 1)
    stats.add("overflow_series", 1, {"name": "x"})
    stats.total(f"late_{x}", 1)
    stats.total("bad_lines", 1, tags)
'''
    problems = problems_in(source, "aggregator", "x.py")
    assert [problem.split(": ", 1)[0] for problem in problems] == ["x.py:4", "x.py:5", "x.py:6", "x.py:7", "x.py:8"]
    assert "aggregator.brand_new is not declared" in problems[0]
    assert "declared a counter, emitted as a gauge" in problems[1]
    assert "declared with tags ['metric', 'shard'], emitted with ['name', 'shard']" in problems[2]


def test_strict_self_stats_raise_on_what_the_table_does_not_declare() -> None:
    stats = SelfStats("pystatsd.", "aggregator", {"shard": "0"}, {"env": "prod"}, strict=True)
    stats.total("handoffs_refused", 1)
    stats.add("lost_metrics", 2, {"src": "r1"})
    with pytest.raises(UndeclaredSelfMetric, match="aggregator.brand_new is not declared"):
        stats.add("brand_new", 1)
    with pytest.raises(UndeclaredSelfMetric, match="declared a counter, emitted as a gauge"):
        stats.gauge("metrics", 1)
    with pytest.raises(UndeclaredSelfMetric, match="emitted with \\['shard'\\]"):
        stats.add("lost_metrics", 1)
    with pytest.raises(UndeclaredSelfMetric, match="stage 'forwarder' is declared with tags"):
        SelfStats("pystatsd.", "forwarder", {"shard": "0"}, {}, strict=True)
    assert [reading.name for reading in stats.take()] == ["pystatsd.aggregator.handoffs_refused",
                                                          "pystatsd.aggregator.lost_metrics"]


def test_outside_strict_mode_an_undeclared_self_metric_is_logged_once_and_reported(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STRICT_ENV, raising=False)
    stats = SelfStats("pystatsd.", "receiver", {"receiver": "r1"}, {})
    with caplog.at_level(logging.ERROR, logger="stages.common.selfstats"):
        stats.total("brand_new", 1)
        stats.total("brand_new", 2)
    assert [record.getMessage() for record in caplog.records] == [
        "self-metric receiver.brand_new is not declared in stages/common/self_metrics.yaml; reported all the same"]
    assert [(reading.name, reading.value) for reading in stats.take()] == [("pystatsd.receiver.brand_new", 2.0)]


def test_strict_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(UndeclaredSelfMetric):
        SelfStats("pystatsd.", "receiver", {"receiver": "r1"}, {}).total("brand_new", 1)


def test_the_docs_table_is_the_one_the_table_generates() -> None:
    assert DOC_PATH.read_text() == markdown(), "run: python -m stages.common.self_metrics_table --write"


def test_the_markdown_names_every_metric_with_its_type_and_tags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--markdown"]) == 0
    out = capsys.readouterr().out
    assert out == markdown()
    assert "| `pystatsd.aggregator.handoffs_refused` | counter | `shard` |" in out
    assert "| `pystatsd.fleet.late_partials` | counter | `shard`, `host` |" in out
    assert "| `pystatsd.forwarder.lost_flushes` | counter |  |" in out
