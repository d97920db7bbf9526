"""etc/pystatsd.yaml runs on a bare machine and shows, commented and valid, the keys a user reaches for first."""

from __future__ import annotations

import re
from pathlib import Path

from stages.common.config import load_config
from stages.control.cli import config_problems
from stages.forwarder.sinks import SINKS, load_sink_configs
from stages.receiver.rules.rule_set import rule_problems

SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "pystatsd.yaml"


def uncommented(text: str) -> str:
    """The config with every commented setting turned on: ``# key: value`` loses its ``# ``; ``##`` prose stays."""
    return re.sub(r"^(\s*)# (?!#)", r"\1", text, flags=re.MULTILINE)


def test_the_shipped_config_is_valid_and_needs_no_server() -> None:
    assert config_problems(SHIPPED) == []
    remote = [name for name in load_config(SHIPPED).forwarders if SINKS[name].remote]
    assert not remote, f"make run would need a server for {remote}"


def test_its_commented_settings_are_valid_and_show_tags_influxdb_and_kafka(tmp_path: Path) -> None:
    path = tmp_path / "pystatsd.yaml"
    path.write_text(uncommented(SHIPPED.read_text()))
    config = load_config(path)
    sinks = load_sink_configs(config)
    assert config.agent.tags and {"influxdb", "kafka", "file", "console"} <= set(sinks)
    assert config.rules and rule_problems(config, tmp_path) == []
