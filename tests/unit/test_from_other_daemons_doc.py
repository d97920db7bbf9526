"""docs/from-other-daemons.md shows what `pystatsd rules test` prints: each section's config (and the
statsd_exporter file it names) gives exactly the lines its console block shows, and the native rules
the section translates it into give the same names, types and tags for the same lines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.paths import REPO
from stages.common.config import Config, load_section
from stages.control import try_rules

PAGE = REPO / "docs" / "from-other-daemons.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: The keys that hold rules: a YAML block holding one is a config of the section.
RULE_KEYS = ("rules", "mapping_config", "dogstatsd_mapper_profiles")


def sections() -> dict[str, str]:
    parts = re.split(r"^## ", PAGE.read_text(), flags=re.MULTILINE)[1:]
    return {part.splitlines()[0]: part for part in parts}


def blocks(section: str) -> list[tuple[str, str]]:
    return [(language, text) for language, text in BLOCK.findall(section)]


def console(text: str) -> tuple[list[str], list[str]]:
    """The lines a `pystatsd rules test -c FILE LINE...` command is given, and the lines the page shows it printed."""
    joined = re.sub(r"\\\n\s*", "", text).splitlines()
    (call,) = [line for line in joined if line.startswith("$ pystatsd rules test -c ")]
    lines = shlex.split(call)[6:]
    return lines, [line for line in joined if "  ->  " in line]


def printed(config: dict[str, Any], tmp_path: Path, lines: list[str]) -> list[str]:
    loaded = load_section(Config, config, "")
    return try_rules.as_text(list(try_rules.tried(loaded, tmp_path, lines)))


def identities(config: dict[str, Any], tmp_path: Path, lines: list[str]) -> list[tuple[Any, ...]]:
    loaded = load_section(Config, config, "")
    return [(r["outcome"] == "dropped", r.get("name"), r.get("type"), tuple(sorted((r.get("tags") or {}).items())))
            for r in try_rules.tried(loaded, tmp_path, lines)]


@pytest.mark.parametrize("title", [title for title in sections() if title.startswith("From ")])
def test_each_section_prints_what_the_page_shows_and_its_translation_agrees(title: str, tmp_path: Path) -> None:
    configs: list[dict[str, Any]] = []
    runs: list[tuple[dict[str, Any], list[str], list[str]]] = []
    for language, text in blocks(sections()[title]):
        if language == "yaml" and text.startswith("# /etc/statsd_exporter/mapping.yml"):
            (tmp_path / "mapping.yml").write_text(text)
            continue
        if language == "yaml":
            config = yaml.safe_load(text)
            assert any(key in config for key in RULE_KEYS), text
            if "mapping_config" in config:
                config["mapping_config"] = "mapping.yml"
            configs.append(config)
        elif language == "console" and "pystatsd rules test" in text:
            lines, shown = console(text)
            runs.append((configs[-1], lines, shown))
    assert runs, f"{title}: no `pystatsd rules test` shown"
    for config, lines, shown in runs:
        assert printed(config, tmp_path, lines) == shown
    # The native translation (the section's last config, when it comes after the run) maps alike.
    tried_config, lines, _ = runs[0]
    if configs[-1] is not tried_config:
        assert identities(configs[-1], tmp_path, lines) == identities(tried_config, tmp_path, lines)
