"""What ``pystatsd check-config --diff`` reports: each changed key once, how it applies, no secret shown."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stages.common.config import Config, load_section
from stages.common.config_diff import AT_RESTART, ON_RELOAD, Change, config_changes
from stages.control.cli import main
from stages.forwarder.sinks import sink_sections

BASE = {"bind_port": 5090, "percentiles": [50, 99], "agent": {"tags": {"dc": "a"}},
        "forwarders": {"file": {"path": "/tmp/x.jsonl"},
                       "influxdb": {"url": "http://127.0.0.1:8086", "database": "m", "username": "u",
                                    "password": "hunter2"}}}


def config(**changes: object) -> Config:
    return load_section(Config, {**BASE, **changes}, "")


def test_the_same_config_changes_nothing() -> None:
    assert config_changes(config(), config(), sink_sections) == []


def test_each_changed_key_once_with_how_it_applies() -> None:
    new = config(flush_interval=5, agent={"tags": {"team": "core"}}, percentiles=[50, 99],
                 forwarders={"influxdb": {**BASE["forwarders"]["influxdb"], "database": "n"},  # type: ignore[index]
                             "graphite": {"host": "127.0.0.1"}})
    assert config_changes(config(), new, sink_sections) == [
        Change("agent.tags.dc", "'a'", "(not set)", ON_RELOAD),
        Change("agent.tags.team", "(not set)", "'core'", ON_RELOAD),
        Change("flush_interval", "10.0", "5.0", AT_RESTART),
        Change("forwarders.file", "(a sink)", "(not set)", ON_RELOAD),
        Change("forwarders.graphite", "(not set)", "(a sink)", ON_RELOAD),
        Change("forwarders.influxdb.database", "'m'", "'n'", ON_RELOAD),
    ]


def test_a_changed_rule_shows_as_the_keys_it_changed_and_applies_on_reload() -> None:
    rules = [{"match": "api.*", "name": "api", "tags": {"host": "$1"}}, {"match": "debug.*", "drop": True}]
    new = [{"match": "api.*", "name": "api.requests", "tags": {"host": "$1"}}]
    assert config_changes(config(rules=rules), config(rules=new), sink_sections) == [
        Change("rules[0].name", "'api'", "'api.requests'", ON_RELOAD),
        Change("rules[1].drop", "True", "(not set)", ON_RELOAD),
        Change("rules[1].match", "'debug.*'", "(not set)", ON_RELOAD),
    ]


def test_a_changed_secret_is_named_never_shown() -> None:
    forwarders = {**BASE["forwarders"], "influxdb": {**BASE["forwarders"]["influxdb"],  # type: ignore[dict-item]
                                                      "password": "correct-horse"}}
    (change,) = config_changes(config(), config(forwarders=forwarders), sink_sections)
    assert change == Change("forwarders.influxdb.password", "(a secret)", "(a secret)", ON_RELOAD)


def test_the_command_checks_both_and_prints_the_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new, bad = tmp_path / "old.yaml", tmp_path / "new.yaml", tmp_path / "bad.yaml"
    old.write_text(yaml.safe_dump(BASE))
    new.write_text(yaml.safe_dump({**BASE, "bind_port": 6000}))
    bad.write_text(yaml.safe_dump({**BASE, "bind_prot": 6000}))
    assert main(["check-config", "-c", str(old), "--diff", str(new)]) == 0
    out = capsys.readouterr().out
    assert "1 change\n" in out and "bind_port  5090 -> 6000  (applies on reload)" in out
    assert "hunter2" not in out
    assert main(["check-config", "-c", str(old), "--diff", str(bad)]) == 78
    assert "bind_prot: unknown key (did you mean 'bind_port'?)" in capsys.readouterr().err


def test_named_sinks_show_by_name_and_a_changed_kind_as_their_type() -> None:
    named = {"archive": {"type": "file", "path": "/tmp/a.jsonl"}, "audit": {"type": "file", "path": "/tmp/b.jsonl"}}
    new = {"archive": {"type": "console"}, "audit": {"type": "file", "path": "/tmp/c.jsonl"}}
    assert config_changes(config(forwarders=named), config(forwarders=new), sink_sections) == [
        Change("forwarders.archive.mode", "'0600'", "(not set)", ON_RELOAD),
        Change("forwarders.archive.path", "'/tmp/a.jsonl'", "(not set)", ON_RELOAD),
        Change("forwarders.archive.self_metrics", "(not set)", "False", ON_RELOAD),
        Change("forwarders.archive.type", "'file'", "'console'", ON_RELOAD),
        Change("forwarders.audit.path", "'/tmp/b.jsonl'", "'/tmp/c.jsonl'", ON_RELOAD),
    ]
