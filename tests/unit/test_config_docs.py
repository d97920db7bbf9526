"""docs/configuration.md and its sink pages (docs/sinks/) name every key the config's dataclasses take,
and no key they do not.

Both ways, so that a key can neither go undocumented nor stay documented once it is gone: the keys
of ``Config`` (with its sections ``agent``, ``queues`` and ``input.kafka``) against the first column
of the page's key tables, and each sink's config dataclass against its row of the sink table, its
own key table and the ``forwarders:`` sections of the page's YAML examples.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import yaml

from stages.common.config import AgentConfig, Config, KafkaInputConfig, QueueConfig
from stages.forwarder.sinks import SINKS, sink_kind
from stages.forwarder.sinks.base import BufferConfig
from tests import config_pages

DOC = config_pages.TEXT
NESTED = {"agent": AgentConfig, "queues": QueueConfig}


def config_keys() -> Iterator[str]:
    for field in dataclasses.fields(Config):
        if field.name == "input":
            yield from (f"input.kafka.{inner.name}" for inner in dataclasses.fields(KafkaInputConfig))
        elif field.name in NESTED:
            yield from (f"{field.name}.{inner.name}" for inner in dataclasses.fields(NESTED[field.name]))
        else:
            yield field.name


def sink_keys(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(SINKS[name].config_type) if f.init}


def tables(first_column: str) -> Iterator[tuple[str, list[list[str]]]]:
    """(its heading, its rows' cells) for each of the page's tables whose first column is ``first_column``."""
    heading, rows, in_table = "", list[list[str]](), False
    for line in [*DOC.splitlines(), ""]:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith(f"| {first_column} |"):
            rows, in_table = [], True
        elif in_table and line.startswith("|"):
            if not line.startswith("| ---"):
                rows.append([cell.strip() for cell in line.split("|")[1:-1]])
        elif in_table:
            in_table = False
            yield heading, rows


def named(text: str) -> list[str]:
    """The backticked names in ``text`` outside parentheses (inside them stand defaults and asides)."""
    while (shorter := re.sub(r"\([^()]*\)", "", text)) != text:
        text = shorter
    return re.findall(r"`([^`]+)`", text)


def sink_rows() -> dict[str, str]:
    """The sink table: each sink's name → its keys cell."""
    ((_, rows),) = tables("sink")
    return {named(name)[0]: keys for name, keys, *_ in rows}


def test_every_top_level_key_is_documented() -> None:
    missing = [key for key in config_keys() if f"`{key}`" not in DOC]
    assert not missing, f"config keys missing from docs/configuration.md: {missing}"


def test_every_sink_and_its_keys_are_documented() -> None:
    shared = {f.name for f in dataclasses.fields(BufferConfig)}
    assert all(f"`{key}`" in DOC for key in shared), "the keys every sink has are not all documented"
    rows = sink_rows()
    for name in SINKS:
        assert name in rows, f"sink {name} has no row in the sink table of docs/configuration.md"
        if name != "console":
            page = config_pages.SINK_PAGES / f"{name.replace('_', '-')}.md"
            assert page.exists(), f"sink {name} has no page in docs/sinks/"
        missing = sorted(sink_keys(name) - shared - set(named(rows[name])))
        assert not missing, f"sink {name}: keys missing from its row of the sink table: {missing}"


def test_every_key_documented_is_one_the_config_takes() -> None:
    known, key_tables = set(config_keys()), list(tables("key"))
    assert [heading for heading, _ in key_tables][:1] == ["Every key"], "the page's first key table is not 'Every key'"
    for heading, rows in key_tables:
        sink = heading.lower().replace(" ", "_")  # "Prometheus remote write": prometheus_remote_write's
        accepted = sink_keys(sink) if sink in SINKS else known
        unknown = [key for row in rows for key in named(row[0]) if key not in accepted]
        assert not unknown, f"docs/configuration.md, table under {heading!r}: no such key {unknown}"


def test_every_sink_key_documented_is_one_the_sink_takes() -> None:
    for name, keys in sink_rows().items():
        assert name in SINKS, f"docs/configuration.md documents a sink {name!r} the forwarder does not have"
        unknown = sorted(set(named(keys)) - sink_keys(name))
        assert not unknown, f"sink {name}: its row names keys it does not take: {unknown}"


def test_every_key_of_the_yaml_examples_is_one_the_config_takes() -> None:
    examples = [yaml.safe_load(block) or {}
                for block in re.findall(r"^```yaml\n(.*?)^```", DOC, re.MULTILINE | re.DOTALL)]
    top = {key.split(".")[0] for key in config_keys()}
    for example in examples:
        if "scrape_configs" in example:  # Prometheus' own prometheus.yml, beside the sink's
            continue
        assert set(example) <= top, f"an example's keys are not all config keys: {sorted(set(example) - top)}"
        for name, section in (example.get("forwarders") or {}).items():
            # A sink's kind: its type, else its name (the original form); one of neither is refused here.
            kind = sink_kind(name, section)
            unknown = sorted(set(section or {}) - {"type"} - sink_keys(kind))
            assert not unknown, f"an example of forwarders.{name} has keys it does not take: {unknown}"
