"""The one stage lifecycle: its exit codes and order, and the stop budgets against supervisord.conf."""

from __future__ import annotations

import argparse
import configparser
import logging
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from stages.common import lifecycle
from stages.common.config import REPO_CONFIG, Config
from stages.common.lifecycle import (
    EXIT_CONFIG,
    EXIT_OK,
    STOP_BUDGET_SECS,
    STOP_MARGIN_SECS,
    Loop,
    Stage,
    StartError,
    StopSignal,
    run_stage,
)
from stages.rundir.figures import START_ERROR, read_all

REPO = Path(__file__).resolve().parents[2]


def programs() -> dict[str, configparser.SectionProxy]:
    """supervisord.conf's [program:*] sections by program name."""
    parser = configparser.RawConfigParser(comment_prefixes=(";",), inline_comment_prefixes=None)
    parser.read(REPO / "supervisord.conf")
    return {name.removeprefix("program:"): parser[name] for name in parser.sections() if name.startswith("program:")}


def stage_of(section: configparser.SectionProxy) -> str:
    """The stage a program runs: its ``python -m stages.<stage>``."""
    match = re.search(r"-m stages\.(\w+)", section["command"])
    assert match, section["command"]
    return match.group(1)


def test_every_program_is_a_stage_with_a_stop_budget() -> None:
    assert {stage_of(section) for section in programs().values()} == set(STOP_BUDGET_SECS)


@pytest.mark.parametrize("program", sorted(programs()))
def test_stopwaitsecs_covers_the_stage_s_stop_budget_and_the_margin(program: str) -> None:
    # Past stopwaitsecs supervisord SIGKILLs the stage, and what it still held is lost.
    section = programs()[program]
    stage = stage_of(section)
    assert int(section["stopwaitsecs"]) >= STOP_BUDGET_SECS[stage] + STOP_MARGIN_SECS, (
        f"[program:{program}] stopwaitsecs={section['stopwaitsecs']} leaves less than {STOP_MARGIN_SECS} s beyond "
        f"the {STOP_BUDGET_SECS[stage]} s its stop may take (stages/common/lifecycle.py STOP_BUDGET_SECS)")


def test_the_budgets_are_the_sums_their_stops_are_made_of() -> None:
    assert STOP_BUDGET_SECS == {"receiver": 2.0, "aggregator": 11.2, "forwarder": 31.0}


def test_systemd_waits_for_every_stage_stopping_in_turn() -> None:
    # supervisord stops the programs one priority after the other, each up to its stopwaitsecs.
    unit = (REPO / "etc" / "packaging" / "pystatsd.service").read_text()
    match = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)
    assert match, "the unit no longer says TimeoutStopSec"
    timeout = int(match.group(1))
    by_priority: dict[str, int] = {}
    for section in programs().values():
        priority = section["priority"]
        by_priority[priority] = max(by_priority.get(priority, 0), int(section["stopwaitsecs"]))
    assert timeout >= sum(by_priority.values())


class FakeLoop:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def run(self, stop: StopSignal) -> None:
        self.events.append("run")


class FakeStage(Stage, stage="receiver", description="a stage for the test", log=logging.getLogger("tests.fake_stage")):
    def __init__(self, refuse_in: str = "") -> None:
        self.refuse_in = refuse_in
        self.events: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--extra", default="x")

    def name(self, args: argparse.Namespace) -> str:
        return f"fake-{args.extra}"

    def lock_name(self, args: argparse.Namespace) -> str:
        return "fake"

    def check(self, args: argparse.Namespace, config: Config) -> None:
        self.events.append("check")
        if self.refuse_in == "check":
            raise StartError("Config error: --extra %s is no good", args.extra)

    def start(self, args: argparse.Namespace, config: Config, run: Path, ctx: zmq.Context[zmq.Socket[bytes]]) -> Loop:
        self.events.append(f"start {run.name}")
        if self.refuse_in == "start":
            raise StartError("Cannot start: %s", "port taken")
        return FakeLoop(self.events)

    def close(self) -> None:
        self.events.append("close")

    def stopped(self) -> None:
        self.events.append("stopped")


@pytest.fixture
def quiet_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """run_stage's process-wide settings undone: logging stays pytest's, the signals their handlers."""
    monkeypatch.setattr(lifecycle, "setup_logging", lambda stage: None)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    yield
    signal.set_wakeup_fd(wakeup)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def argv(tmp_path: Path, *more: str) -> list[str]:
    return ["-c", str(REPO_CONFIG), "--shards", "2", "--run-dir", str(tmp_path / "run"), *more]


def test_a_stage_runs_its_loop_between_start_and_close(tmp_path: Path, quiet_process: None) -> None:
    stage = FakeStage()
    assert run_stage(stage, argv(tmp_path)) == EXIT_OK
    assert stage.events == ["check", "start run", "run", "close", "stopped"]
    assert (tmp_path / "run" / "fake.lock").exists()


@pytest.mark.parametrize("refuse_in", ["check", "start"])
def test_a_stage_that_cannot_start_says_why_in_its_own_log_and_exits_78(
        tmp_path: Path, quiet_process: None, refuse_in: str, caplog: pytest.LogCaptureFixture) -> None:
    stage = FakeStage(refuse_in)
    with caplog.at_level(logging.INFO):
        assert run_stage(stage, argv(tmp_path, "--extra", "y")) == EXIT_CONFIG
    assert "run" not in stage.events and "stopped" not in stage.events
    (record,) = [r for r in caplog.records if r.name == "tests.fake_stage"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == {"check": "Config error: --extra y is no good",
                                   "start": "Cannot start: port taken"}[refuse_in]


def test_a_bad_config_exits_78_before_the_stage_is_asked_anything(tmp_path: Path, quiet_process: None) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flush_intervall: 10\n")
    stage = FakeStage()
    (tmp_path / "run").mkdir(mode=0o700)
    assert run_stage(stage, ["-c", str(bad), "--shards", "2", "--run-dir", str(tmp_path / "run")]) == EXIT_CONFIG
    assert stage.events == []
    # The reason is left where `pystatsd status` reads it, and cleared once a process of the stage starts.
    error = read_all(tmp_path / "run")["fake-x"]["figures"][START_ERROR]
    assert error.startswith("Config error in ") and "flush_intervall: unknown key" in error
    assert run_stage(FakeStage(), argv(tmp_path)) == EXIT_OK
    assert "fake-x" not in read_all(tmp_path / "run")


def test_a_second_copy_with_the_same_lock_exits_78(tmp_path: Path, quiet_process: None) -> None:
    (tmp_path / "run").mkdir(mode=0o700)
    held = lifecycle.take_lock(tmp_path / "run", "fake")
    try:
        assert run_stage(FakeStage(), argv(tmp_path)) == EXIT_CONFIG
    finally:
        held.close()
