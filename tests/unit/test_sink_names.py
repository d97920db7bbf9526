"""Several sinks of one kind: each key under ``forwarders:`` names a sink, whose ``type`` says its kind
(or, without one, the key does, as in the original daemon's config); refusals name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.common.config import Config, ConfigError, load_config, load_section
from stages.control.cli import config_problems
from stages.forwarder.sinks import SINKS, build_sinks, load_sink_configs
from stages.forwarder.sinks.console import ConsoleSink
from stages.forwarder.sinks.file import FileConfig, FileSink
from stages.forwarder.sinks.kafka import KafkaConfig, KafkaSink

ORIGINAL = Path(__file__).resolve().parent.parent / "data" / "configs" / "original.yaml"
KINDS = ", ".join(sorted(SINKS))
BROKER = {"kafka_broker": "127.0.0.1:9092", "kafka_topic": "t"}


def config(forwarders: dict[Any, Any], **keys: Any) -> Config:
    return load_section(Config, {"forwarders": forwarders, **keys}, "")


def refusal(forwarders: dict[Any, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_sink_configs(config(forwarders))
    return str(caught.value)


def test_the_original_daemon_s_config_loads_as_one_kafka_sink_named_kafka() -> None:
    loaded = load_sink_configs(load_config(ORIGINAL))
    assert list(loaded) == ["kafka"] and isinstance(loaded["kafka"], KafkaConfig)
    assert loaded["kafka"].kafka_topic == "myKafkaTopic"


def test_two_file_sinks_and_two_kafka_clusters_by_name_beside_the_original_form(tmp_path: Path) -> None:
    forwarders = {
        "archive": {"type": "file", "path": str(tmp_path / "archive.jsonl")},
        "audit": {"type": "file", "path": str(tmp_path / "audit.jsonl"), "format": "influx"},
        "kafka": BROKER,
        "kafka_eu": {"type": "kafka", **BROKER, "kafka_topic": "eu"},
        "file": {"type": "file", "path": str(tmp_path / "file.jsonl")},  # its own kind, said twice
    }
    sinks = build_sinks(config(forwarders))
    assert [(name, type(sink)) for name, sink, _ in sinks] == [
        ("archive", FileSink), ("audit", FileSink), ("kafka", KafkaSink), ("kafka_eu", KafkaSink), ("file", FileSink)]
    bounds = {name: bound for name, _, bound in sinks}
    assert bounds["audit"] == FileConfig(path=str(tmp_path / "audit.jsonl"), format="influx")
    assert isinstance(bounds["kafka_eu"], KafkaConfig) and bounds["kafka_eu"].kafka_topic == "eu"


def test_debug_mode_stands_a_console_in_for_each_remote_sink_under_its_own_name() -> None:
    sinks = build_sinks(config({"kafka": BROKER, "kafka_eu": {"type": "kafka", **BROKER}}, debug_mode=True))
    assert [(name, type(sink)) for name, sink, _ in sinks] == [("kafka", ConsoleSink), ("kafka_eu", ConsoleSink)]


def test_a_name_that_is_no_kind_and_has_no_type_is_refused_naming_it_and_the_kinds() -> None:
    assert refusal({"archive": {"path": "/tmp/a"}}) == \
        f"forwarders.archive: no such sink kind, and no type says which kind this sink is (known kinds: {KINDS})"
    assert refusal({"file_b": {"path": "/tmp/b"}}) == ("forwarders.file_b: no such sink kind (did you mean "
                                                        f"'file'?), and no type says which kind this sink is "
                                                        f"(known kinds: {KINDS})")


@pytest.mark.parametrize("kind", ["fiel", "nothing", 3, ["file"]])
def test_a_type_that_names_no_kind_is_refused_naming_the_key_and_the_kinds(kind: Any) -> None:
    message = refusal({"archive": {"type": kind, "path": "/tmp/a"}})
    assert message.startswith(f"forwarders.archive.type: unknown sink kind {kind!r}")
    assert message.endswith(f"(known kinds: {KINDS})")
    assert ("(did you mean 'file'?)" in message) == (kind == "fiel")


def test_a_kind_s_name_given_to_a_sink_of_another_kind_is_refused() -> None:
    assert refusal({"file": {"type": "kafka", **BROKER}}) == \
        "forwarders.file.type: a sink named file is of that kind, not kafka; name it otherwise"


@pytest.mark.parametrize("name", ["arch.ive", "arch ive", "a/b", "a:b", "a,b", "a|b", "a#b", "a=b", "-a", "_a",
                                  "", "é", "a" * 65, 1])
def test_a_name_unsafe_for_tags_files_or_dotted_keys_is_refused(name: Any) -> None:
    assert refusal({name: {"type": "console"}}) == \
        f"forwarders.{name}: a sink's name is 1 to 64 letters, digits, '_' and '-', starting with a letter"


def test_names_of_letters_digits_underscores_and_dashes_are_taken() -> None:
    names = ["a", "Team-A_2", "x" * 64]
    assert list(load_sink_configs(config({name: {"type": "console"} for name in names}))) == names


def test_two_file_sinks_on_one_file_are_refused_however_the_path_is_spelt(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path)
    one = str(tmp_path / "out.jsonl")
    for other in (one, str(tmp_path / "link" / "out.jsonl"), str(tmp_path / "sub" / ".." / "out.jsonl")):
        assert refusal({"archive": {"type": "file", "path": one}, "audit": {"type": "file", "path": other}}) == \
            f"forwarders.audit.path: file {one} is held by forwarders.archive already; one sink alone may hold it"


def test_two_prometheus_sinks_on_one_address_are_refused() -> None:
    assert refusal({"scrape": {"type": "prometheus", "port": 9102}, "prometheus": {}}) == \
        "forwarders.prometheus: address 127.0.0.1:9102 is held by forwarders.scrape already; one sink alone may hold it"
    assert list(load_sink_configs(config({"scrape": {"type": "prometheus", "port": 9103}, "prometheus": {}}))) == \
        ["scrape", "prometheus"]


def test_check_config_names_each_named_sink_s_keys(tmp_path: Path) -> None:
    path = tmp_path / "pystatsd.yaml"
    path.write_text(yaml.safe_dump({"forwarders": {
        "archive": {"type": "file", "path": str(tmp_path / "no" / "such" / "a.jsonl")},
        "audit": {"type": "file", "pth": "x"},
        "spare": {"type": "fiel"},
        "one": {"type": "file", "path": str(tmp_path / "one.jsonl")},
        "two": {"type": "file", "path": str(tmp_path / "one.jsonl")},
    }}))
    assert config_problems(path) == [
        f"forwarders.archive.path: cannot open {tmp_path / 'no/such/a.jsonl'}: folder {tmp_path / 'no/such'} "
        "does not exist",
        "forwarders.audit.pth: unknown key (did you mean 'path'?)",
        "forwarders.audit.path: required key is missing",
        f"forwarders.spare.type: unknown sink kind 'fiel' (did you mean 'file'?) (known kinds: {KINDS})",
        f"forwarders.two.path: file {tmp_path / 'one.jsonl'} is held by forwarders.one already; one sink alone "
        "may hold it",
    ]
