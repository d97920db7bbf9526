"""The README documents every config key the code accepts."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

from stages.config import AgentConfig, Config, KafkaInputConfig, QueueConfig
from stages.forwarder.sinks import SINKS
from stages.forwarder.sinks.base import BufferConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
NESTED = {"agent": AgentConfig, "queues": QueueConfig}


def config_keys() -> Iterator[str]:
    for field in dataclasses.fields(Config):
        if field.name == "input":
            yield from (f"input.kafka.{inner.name}" for inner in dataclasses.fields(KafkaInputConfig))
        elif field.name in NESTED:
            yield from (f"{field.name}.{inner.name}" for inner in dataclasses.fields(NESTED[field.name]))
        else:
            yield field.name


def test_every_top_level_key_is_documented() -> None:
    missing = [key for key in config_keys() if f"`{key}`" not in README]
    assert not missing, f"config keys missing from README: {missing}"


def test_every_sink_and_its_keys_are_documented() -> None:
    shared = {f.name for f in dataclasses.fields(BufferConfig)}
    assert all(f"`{key}`" in README for key in shared), "the keys every sink has are not all documented"
    for name, cls in SINKS.items():
        row = re.search(rf"^\| `{name}` \|(.+)$", README, re.MULTILINE)
        assert row, f"sink {name} has no row in the README's sink table"
        missing = [f.name for f in dataclasses.fields(cls.config_type)
                   if f.init and f.name not in shared and f"`{f.name}`" not in row.group(1)]
        assert not missing, f"sink {name}: keys missing from its README row: {missing}"
