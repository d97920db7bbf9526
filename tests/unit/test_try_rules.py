"""``pystatsd rules test`` prints what the config's rules make of each line and which rule decided;
``pystatsd check-config`` refuses a bad rule naming its key (exit 78), as both do a bad config."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from stages.control.cli import main

pytestmark = pytest.mark.serverless

RULES = [{"match": "api.*.*.*.latency", "name": "api.latency", "tags": {"host": "$1", "method": "$2",
                                                                          "endpoint": "$3"}},
         {"match": "debug.*", "drop": True},
         {"match": "web.*", "keep_tags": ["env"]}]


def config(tmp_path: Path, **keys: object) -> str:
    path = tmp_path / "pystatsd.yaml"
    path.write_text(yaml.safe_dump({"rules": RULES, "agent": {"tags": {"env": "prod"}}, **keys}))
    return str(path)


def test_each_line_is_shown_as_the_rules_make_it_with_the_rule_that_decided(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test", "-c", config(tmp_path), "api.host-7.GET.users.latency:12|ms", "debug.x:1:2|c",
                 "web.hits:1|c|#pod:a", "page.views:1|c|#page:home", "a:+1:-2|g", "no value here"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "api.host-7.GET.users.latency:12|ms  ->  api.latency timer endpoint=users,env=prod,host=host-7,method=GET"
        "  (rules[0])",
        "debug.x:1:2|c                       ->  dropped  (rules[1])",
        "web.hits:1|c|#pod:a                 ->  web.hits counter env=prod  (rules[2])",
        "page.views:1|c|#page:home           ->  unchanged page.views counter env=prod,page=home  (no rule)",
        "a:+1:-2|g                           ->  unchanged a gauge env=prod  (no rule)",
        "no value here                       ->  bad line (no_value)",
    ]


def test_lines_from_stdin_and_json_out(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("api.h1.PUT.items.latency:3|ms\n\ndebug.y:1|c\n"))
    assert main(["rules", "test", "--json", "-c", config(tmp_path)]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"line": "api.h1.PUT.items.latency:3|ms", "outcome": "mapped", "rule": "rules[0]", "name": "api.latency",
         "type": "timer", "tags": {"endpoint": "items", "env": "prod", "host": "h1", "method": "PUT"}},
        {"line": "debug.y:1|c", "outcome": "dropped", "rule": "rules[1]"},
    ]


def test_bad_rules_exit_78_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"rules": [{"match": "a"}, {"match": "b.*", "name": "$2"}]}))
    assert main(["rules", "test", "-c", str(path), "a:1|c"]) == 78
    assert capsys.readouterr().err.startswith(f"{path}: rules[1].name: '$2' refers to ${{2}}")


def test_check_config_refuses_a_bad_rule_naming_its_key_beside_every_other_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"flush_intervall": 10, "rules": [{"match": "a"}, {"match": "b", "tag": {}}]}))
    assert main(["check-config", "-c", str(path)]) == 78
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  flush_intervall: unknown key (did you mean 'flush_interval'?)",
        "  rules[1].tag: unknown key (did you mean 'tags'?)",
    ]
    assert main(["check-config", "-c", config(tmp_path)]) == 0
    path.write_text(yaml.safe_dump({"rules": {"match": "a"}}))
    assert main(["check-config", "-c", str(path)]) == 78
    assert "rules: expected a list, got a map" in capsys.readouterr().err


def test_a_mapping_s_scale_is_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mapping.yml").write_text("mappings:\n- match: lat.*\n  name: lat\n  scale: 0.001\n"
                                          "  labels: {svc: $1}\n- match: hits\n  name: hits\n  scale: 2\n")
    path = tmp_path / "pystatsd.yaml"
    path.write_text(yaml.safe_dump({"mapping_config": "mapping.yml"}))
    assert main(["rules", "test", "-c", str(path), "lat.web:12|ms", "hits:1|c", "other:1|c"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "lat.web:12|ms  ->  lat timer svc=web values * 0.001  (mapping_config[0])",
        "hits:1|c       ->  hits counter values * 2  (mapping_config[1])",
        "other:1|c      ->  unchanged other counter  (no rule)",
    ]
    assert main(["rules", "test", "--json", "-c", str(path), "hits:1|c"]) == 0
    assert json.loads(capsys.readouterr().out) == {"line": "hits:1|c", "outcome": "mapped", "rule": "mapping_config[1]",
                                                   "name": "hits", "type": "counter", "tags": {}, "scale": 2.0}


def test_a_mapping_s_ttl_is_shown_on_its_gauges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # only a gauge outlives its interval, so only a gauge's line shows the ttl it is forgotten after
    (tmp_path / "mapping.yml").write_text("defaults:\n  ttl: 90s\nmappings:\n- match: temp.*\n  name: temp\n"
                                          "  ttl: 2m\n  labels: {room: $1}\n- match: hits\n  name: hits\n")
    path = tmp_path / "pystatsd.yaml"
    path.write_text(yaml.safe_dump({"mapping_config": "mapping.yml"}))
    assert main(["rules", "test", "-c", str(path), "temp.x:21|g", "temp.x:+1|g", "hits:1|c", "other:1|g"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "temp.x:21|g  ->  temp gauge room=x ttl 120s  (mapping_config[0])",
        "temp.x:+1|g  ->  temp gauge room=x ttl 120s  (mapping_config[0])",
        "hits:1|c     ->  hits counter  (mapping_config[1])",
        "other:1|g    ->  unchanged other gauge  (no rule)",
    ]
    assert main(["rules", "test", "--json", "-c", str(path), "temp.x:21|g"]) == 0
    assert json.loads(capsys.readouterr().out) == {"line": "temp.x:21|g", "outcome": "mapped",
                                                   "rule": "mapping_config[0]", "name": "temp", "type": "gauge",
                                                   "tags": {"room": "x"}, "ttl": 120.0}


def test_check_config_refuses_bad_histogram_buckets_with_78_naming_key_and_index(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"histogram_buckets": [{"match": "a.*", "buckets": [1, 2]},
                                                          {"match": "b", "buckets": [3, 2]}]}))
    assert main(["check-config", "-c", str(path)]) == 78
    assert "histogram_buckets[1].buckets[1]: bounds must be ascending, but 2.0 is not above 3.0" \
        in capsys.readouterr().err
