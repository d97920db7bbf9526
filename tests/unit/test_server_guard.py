"""The guard that keeps `make check` free of servers (tests/conftest.py, harness/server_guard.py): a test
with no server marker is marked ``serverless`` and cannot start a pipeline or a child server."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from harness.paths import REPO
from harness.pipeline import Pipeline
from harness.process import ChildProcess
from harness.server_guard import ServerInServerlessTest
from tests.conftest import SERVER_MARKERS


def test_a_test_with_no_server_marker_is_marked_serverless(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("serverless") is not None


def test_it_cannot_build_a_pipeline(request: pytest.FixtureRequest) -> None:
    with pytest.raises(ServerInServerlessTest, match=rf"^{request.node.nodeid} starts a pipeline but carries no "):
        Pipeline()


def test_it_cannot_start_a_child_server(tmp_path: Path) -> None:
    child = ChildProcess("carbon", tmp_path)
    with pytest.raises(ServerInServerlessTest, match="starts carbon but carries no server marker"):
        child.start(["true"], ready=lambda: True, what="nothing", timeout=1)
    assert child.proc is None


def test_every_server_marker_is_declared_where_strict_markers_reads() -> None:
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    declared = {line.split(":")[0].split("(")[0] for line in ini["markers"]}
    assert SERVER_MARKERS | {"serverless", "compiled"} <= declared
    assert "--strict-markers" in ini["addopts"].split()
