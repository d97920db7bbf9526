"""The lanes of ``make test`` on several workers (``TEST_WORKERS``): which tests run one after another
on one worker, and which go first.

A lane is a test module, so a module's fixtures (a pipeline, a server) start once, except where
modules must share one:

- ``kafka`` and ``fleet``: the Kafka tests share a broker (its start takes a JVM some seconds of CPU),
  the fleet tests a broker and three hosts' network namespaces; each lane starts its own, so the
  fleet's three-host tiers (the longest tests) run beside the other Kafka tests, not after them;
- ``heavy``: floods, benchmarks and a 1,000,000-datagram fuzz each keep a core busy for many seconds:
  two at once starve each other's (and the other lanes') timings;
- ``packaging``: the package builds and the quick start's install, long and busy too, but timed loosely.

The scheduler (``LaneScheduling``) hands the lanes out longest first, so the long shared lanes do not
start last and hold the run up at its end. It reads a test's lane from its node id alone: the
controller that schedules never imports a test module.
"""

from __future__ import annotations

from xdist.scheduler.loadscope import LoadScopeScheduling
from xdist.workermanage import WorkerController

#: Lane name → the node-id prefixes (modules) of its tests, in the order they are handed out (the longest first).
SHARED_LANES: dict[str, tuple[str, ...]] = {
    "kafka": ("tests/kafka/test_broker.py", "tests/kafka/test_kafka_delivery.py", "tests/kafka/test_kafka_sink.py"),
    "packaging": ("tests/packaging/test_packages.py", "tests/packaging/test_quick_start.py"),
    "heavy": (
        "tests/bench/test_bench_smoke.py",
        "tests/bench/test_bench_sinks_smoke.py",
        "tests/bench/test_flush_smoke.py",
        "tests/e2e/test_pure_python.py",
        "tests/fault/test_cardinality.py",
        "tests/fault/test_fuzz_receiver.py",
        "tests/fault/test_gauge_flood.py",
        "tests/fault/test_sanitized_core.py",
    ),
    "fleet": ("tests/kafka/test_fleet.py",),
    # A module's lane as it would be anyway; named to go out first, as long as the shared ones.
    "restarts": ("tests/fault/test_restarts.py",),
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
