"""pytest wiring for the real Kafka broker: the `kafka_broker` session fixture and `kafka` marker."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# kafka-python 3.0.12 calls importlib.resources.read_text(), deprecated since Python 3.11, while
# it is imported (only then); under filterwarnings=error that would fail collection.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from tests.kafka.broker import KafkaBroker, kafka_cache_dir

from harness.netns import HostNetwork

HERE = Path(__file__).resolve().parent

log = logging.getLogger(__name__)

SASL_USERS = {"token": "test-api-key-123"}

#: The hosts of the fleet tests, each a network namespace (tests/kafka/test_fleet.py).
FLEET_HOSTS = ("edge-a", "edge-b", "edge-c")


@pytest.fixture(scope="session")
def host_network() -> Iterator[HostNetwork]:
    """FLEET_HOSTS as network namespaces; the broker listens for them on the bridge's address."""
    # A /24 of its own per pytest-xdist worker: the Kafka and fleet lanes each start a broker and its network.
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    network = HostNetwork(list(FLEET_HOSTS), subnet=f"10.231.{77 + worker}").create()
    try:
        yield network
    finally:
        network.remove()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory, host_network: HostNetwork) -> Iterator[KafkaBroker]:
    """A running single-node broker for the whole session, with SASL user `token` and a listener
    for the hosts of ``host_network``."""
    # A missing broker must fail the run, never skip it: skipped Kafka tests would pass CI
    # while testing nothing.
    fetch = subprocess.run(
        ["bash", str(HERE / "fetch_jars.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if fetch.returncode != 0:
        pytest.fail(
            f"tests/kafka/fetch_jars.sh exited {fetch.returncode}:\n{fetch.stdout}{fetch.stderr}",
            pytrace=False,
        )
    log.info("fetch_jars.sh:\n%s", fetch.stdout.strip())

    broker = KafkaBroker(
        work_dir=tmp_path_factory.mktemp("kafka"),
        jars_dir=kafka_cache_dir() / "libs",
        sasl_users=SASL_USERS,
        hosts_address=host_network.gateway,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
