"""Each stage process's name, from stages.common.process_names, is the name supervisord.conf gives it."""

from __future__ import annotations

import shlex
from pathlib import Path

from stages.common.process_names import AGGREGATOR, FORWARDER, RECEIVER, is_process_of, process_name
from stages.control.supervisord_conf import conf_parser

CONF = conf_parser((Path(__file__).resolve().parents[2] / "supervisord.conf").read_text())


def named(program: str, number: int) -> tuple[str, str]:
    """The process name supervisord gives process ``number`` of ``program``, and the --name it passes."""
    section = CONF[f"program:{program}"]
    expand = {"process_num": number, "program_name": program}
    command = shlex.split(section["command"])
    passed = command[command.index("--name") + 1] if "--name" in command else ""
    return section.get("process_name", "%(program_name)s") % expand, passed % expand


def test_supervisord_names_each_process_as_process_name_does() -> None:
    assert named("forwarder", 0)[0] == process_name(FORWARDER) == "forwarder"
    assert named("aggregator", 3)[0] == process_name(AGGREGATOR, 3) == "aggregator-3"
    assert named("receiver", 0) == (process_name(RECEIVER), process_name(RECEIVER))
    assert named("receiver-extra", 2) == (process_name(RECEIVER, 2), process_name(RECEIVER, 2))


def test_a_process_is_of_its_stage_only() -> None:
    assert is_process_of("aggregator-0", AGGREGATOR) and is_process_of("receiver", RECEIVER)
    assert is_process_of("receiver-1", RECEIVER) and not is_process_of("receiver-1", AGGREGATOR)
    assert not is_process_of("forwarders", FORWARDER)
