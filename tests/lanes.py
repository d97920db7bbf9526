"""The lanes of ``make test`` on several workers (``TEST_WORKERS``): which tests run one after another
on one worker, and which go first.

A lane is a test module, so a module's fixtures (a pipeline, a server) start once, except where
modules must share one:

- ``kafka``: the Kafka tests share one broker and the fleet tests' fixed network namespaces (two
  workers would start two of each, and the namespaces clash);
- ``heavy``: floods, package builds, benchmarks and a 1,000,000-datagram fuzz each keep a core busy
  for many seconds: two at once starve each other's (and the other lanes') timings.

The scheduler (``LaneScheduling``) hands the lanes out longest first, so the long shared lanes do not
start last and hold the run up at its end. It reads a test's lane from its node id alone: the
controller that schedules never imports a test module.
"""

from __future__ import annotations

from xdist.scheduler.loadscope import LoadScopeScheduling
from xdist.workermanage import WorkerController

#: Lane name → the node-id prefixes (a directory or a module) of its tests, in the order they are handed out.
SHARED_LANES: dict[str, tuple[str, ...]] = {
    "kafka": ("tests/kafka/",),
    "heavy": (
        "tests/bench/test_bench_smoke.py",
        "tests/bench/test_flush_smoke.py",
        "tests/e2e/test_pure_python.py",
        "tests/fault/test_cardinality.py",
        "tests/fault/test_fuzz_receiver.py",
        "tests/fault/test_gauge_flood.py",
        "tests/fault/test_sanitized_core.py",
        "tests/packaging/test_packages.py",
        "tests/packaging/test_quick_start.py",
    ),
}


def lane(nodeid: str) -> str:
    """The lane of the test ``nodeid``: a shared lane's name, or else its module."""
    for name, prefixes in SHARED_LANES.items():
        if nodeid.startswith(prefixes):
            return name
    return nodeid.split("::", 1)[0]


class LaneScheduling(LoadScopeScheduling):
    """pytest-xdist's scope scheduling with ``lane`` as the scope, the shared lanes handed out first."""

    def _split_scope(self, nodeid: str) -> str:
        return lane(nodeid)

    def _assign_work_unit(self, node: WorkerController) -> None:
        for name in reversed(SHARED_LANES):
            if name in self.workqueue:
                self.workqueue.move_to_end(name, last=False)
        super()._assign_work_unit(node)
