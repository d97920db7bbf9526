"""The guard that keeps `make check` free of servers: a test that carries no server marker (the
pytest markers tests/conftest.py lists) runs with SERVERLESS_ENV set to its node id, and the harness's
starters refuse to start a pipeline or a child server under it, naming the test.

It lives in the environment, not in pytest, so it also reaches a command a test runs in a child
process (the fleet benchmark's smoke run builds its pipelines there).
"""

from __future__ import annotations

import os

#: Set (to the test's node id) while a test with no server marker runs.
SERVERLESS_ENV = "PYSTATSD_SERVERLESS_TEST"


class ServerInServerlessTest(RuntimeError):
    """A pipeline or a server started by a test that carries no server marker."""


def refuse_in_serverless_test(what: str) -> None:
    """Raise when the running test carries no server marker; ``what`` says what it tried to start."""
    test = os.environ.get(SERVERLESS_ENV)
    if test:
        raise ServerInServerlessTest(
            f"{test} starts {what} but carries no server marker: mark it e2e, kafka, fault, servers or "
            f"packaging (tests/conftest.py's SERVER_MARKERS), or `make check` would start it")
