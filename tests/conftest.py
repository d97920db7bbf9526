"""pytest wiring for the whole suite: the ``compiled`` marker.

``@pytest.mark.compiled(part, what)`` marks a test that needs a compiled part: ``part`` is what the
import gave (None when the extension was not built), ``what`` names it. The build makes the compiled
parts optional (a machine without a compiler still runs the daemon), so a C change that stops compiling
only makes them missing. Where CI runs (``CI=true``) every part is required and its tests fail, so that
cannot pass green; elsewhere they are skipped, and the skip says why.

The server markers (SERVER_MARKERS, declared in pyproject.toml): a test that starts a pipeline, a
broker, a sink's server or a package build carries one. Every other test is given the ``serverless``
marker, which `make check` selects, and runs with harness.server_guard's variable set, so a pipeline
or server it starts fails it (naming the test) instead of slowing `make check` down.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.server_guard import SERVERLESS_ENV
from tests.lanes import LaneScheduling

#: The markers of a test that needs a server (a pipeline under supervisord, Kafka, InfluxDB or carbon, a
#: package build): `make check` runs every test that carries none of them.
SERVER_MARKERS = frozenset({"e2e", "kafka", "fault", "servers", "packaging"})


def needs_a_server(item: pytest.Item) -> bool:
    return any(mark.name in SERVER_MARKERS for mark in item.iter_markers())


@pytest.hookimpl(tryfirst=True)  # before pytest's own, which deselects by marker (`-m serverless`)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not needs_a_server(item):
            item.add_marker(pytest.mark.serverless)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LaneScheduling:
    """`make test TEST_WORKERS=N`'s scheduler: the lanes of tests/lanes.py."""
    return LaneScheduling(config, log)


@pytest.fixture
def short_tmp_path() -> Iterator[Path]:
    """A temp dir of a short path, for a run directory in it: pytest's own ``tmp_path`` (longer under
    pytest-xdist) may leave its sockets no room, and pystatsd refuses a run directory whose sockets' paths
    would pass a Unix socket's limit."""
    path = Path(tempfile.mkdtemp(prefix="pst"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def compiled_required() -> bool:
    """Whether this run requires every compiled part: it does where CI runs."""
    return os.environ.get("CI") == "true"


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test is set up, session ones included
def pytest_runtest_setup(item: pytest.Item) -> None:
    if needs_a_server(item):
        os.environ.pop(SERVERLESS_ENV, None)
    else:
        os.environ[SERVERLESS_ENV] = item.nodeid
    for mark in item.iter_markers("compiled"):
        part, what = mark.args
        if part is not None:
            continue
        missing = f"{what} was not built (make install's compiler output says why)"
        if compiled_required():
            pytest.fail(f"{missing}: required where CI runs (CI=true)", pytrace=False)
        pytest.skip(missing)
