"""The systems the benchmark drives, behind one interface: pystatsd under supervisord, and the peers.

Each system says where to send, which processes are its stages, and two cumulative readings:
the counter total it delivered for the load's names, and its own loss counters. The runner
measures a run as the difference of two readings, so one running system serves many runs.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Protocol

from bench import peers, procstat
from tests.harness import Pipeline

#: Every metric the load generator and the RSS probe send is named ``bench.*``.
LOAD_PREFIX = "bench."
SELF_PREFIX = "pystatsd."
#: pystatsd's own counters that say where samples, batches or aggregates were lost.
LOSS_METRICS = (
    "pystatsd.receiver.kernel_drops",
    "pystatsd.receiver.dropped",
    "pystatsd.receiver.bad_lines",
    "pystatsd.aggregator.lost_batches",
    "pystatsd.forwarder.dropped",
    "pystatsd.forwarder.lost_flushes",
)


class System(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def target_port(self) -> int: ...

    def udp_ports(self) -> list[int]: ...

    def stage_pids(self) -> dict[str, int]: ...

    def delivered(self) -> float: ...

    def loss_counters(self) -> dict[str, float]: ...


class AggregateTally:
    """Running sums over a stream of aggregates: load counters, and pystatsd's loss counters."""

    def __init__(self) -> None:
        self.counter_total = 0.0
        self.losses = dict.fromkeys(LOSS_METRICS, 0.0)

    def add(self, aggregate: dict[str, Any]) -> None:
        name = aggregate["name"]
        if aggregate["type"] != "counter":
            return
        if name.startswith(LOAD_PREFIX):
            self.counter_total += aggregate["value"]
        elif name in self.losses:
            self.losses[name] += aggregate["value"]


class FileTail:
    """Reads a growing JSON-lines file from where it left off, so a long sweep never re-reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.tally = AggregateTally()

    def poll(self) -> AggregateTally:
        if not self.path.exists():
            return self.tally
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        for line in complete.splitlines():
            if line:
                self.tally.add(json.loads(line))
        return self.tally


class KafkaTail:
    """Reads the aggregates back from a Kafka topic (json format) as a consumer would."""

    def __init__(self, broker: str, topic: str) -> None:
        from kafka import KafkaConsumer  # only a --sink kafka run needs kafka-python loaded

        self.consumer = KafkaConsumer(topic, bootstrap_servers=broker, group_id=None,
                                      auto_offset_reset="earliest", enable_auto_commit=False)
        self.tally = AggregateTally()

    def poll(self) -> AggregateTally:
        while batches := self.consumer.poll(timeout_ms=200):
            for records in batches.values():
                for record in records:
                    self.tally.add(json.loads(record.value))
        return self.tally

    def close(self) -> None:
        self.consumer.close()


def kafka_topic(broker: str, name: str) -> str:
    """Creates ``name`` on the broker (one partition), so the sink never waits for auto-creation."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    return name


class PystatsdSystem:
    """The real pipeline under supervisord (tests/harness.py), read back from its file or Kafka sink."""

    def __init__(self, shards: int, flush_interval: float, kafka_broker: str | None = None,
                 extra_receivers: int = 0) -> None:
        self.name = "pystatsd"
        self.shards = shards
        self.extra_receivers = extra_receivers
        self.flush_interval = flush_interval
        self.kafka_broker = kafka_broker
        self.pipeline: Pipeline | None = None
        self.tail: FileTail | KafkaTail | None = None
        self.pids: dict[str, int] = {}

    def _sink_config(self) -> dict[str, Any]:
        if self.kafka_broker is None:
            return {}  # the harness's default: a file sink in the pipeline's temp dir
        topic = kafka_topic(self.kafka_broker, f"pystatsd-bench-{time.time_ns()}")
        self.tail = KafkaTail(self.kafka_broker, topic)
        return {"forwarders": {"kafka": {"kafka_broker": self.kafka_broker, "kafka_topic": topic,
                                         "format": "json", "include_apikey": False}}}

    def start(self) -> None:
        self.pipeline = Pipeline(self._sink_config(), shards=self.shards, flush_interval=self.flush_interval,
                                 extra_receivers=self.extra_receivers)
        if self.tail is None:
            self.tail = FileTail(self.pipeline.out_path)
        try:
            self.pipeline.start()
            self.pids = self._read_pids()
        except BaseException:
            # a stage that never came up must not leave supervisord and the others running
            self.stop()
            raise

    def _read_pids(self) -> dict[str, int]:
        assert self.pipeline is not None
        # "aggregator:aggregator-0" → "aggregator-0": the group name adds nothing to a stage's name
        pids = {program.split(":")[-1]: pid for program, (_, pid) in self.pipeline.status().items() if pid}
        pids["supervisord"] = int((self.pipeline.run_dir / "supervisord.pid").read_text())
        return pids

    def stop(self) -> None:
        if self.pipeline is None:
            return
        try:
            self.pipeline.stop()
        finally:
            self.pipeline.cleanup()
            if isinstance(self.tail, KafkaTail):
                self.tail.close()
            self.pipeline, self.tail, self.pids = None, None, {}

    def target_port(self) -> int:
        assert self.pipeline is not None
        return self.pipeline.statsd_port

    def udp_ports(self) -> list[int]:
        assert self.pipeline is not None
        return [self.pipeline.port, self.pipeline.statsd_port]

    def stage_pids(self) -> dict[str, int]:
        return dict(self.pids)

    def delivered(self) -> float:
        assert self.tail is not None
        return self.tail.poll().counter_total

    def loss_counters(self) -> dict[str, float]:
        assert self.tail is not None
        return dict(self.tail.poll().losses)


class PeerSystem:
    """A peer from bench/peers.py, one process, on a fresh port per start."""

    def __init__(self, peer: peers.Peer, flush_interval: float, workdir: Path) -> None:
        self.peer = peer
        self.name = peer.name
        self.flush_interval = flush_interval
        self.workdir = workdir / peer.name

    def start(self) -> None:
        self.peer.install()
        self.peer.start(peers.free_port(), self.flush_interval, self.workdir)

    def stop(self) -> None:
        self.peer.stop()

    def target_port(self) -> int:
        return self.peer.port

    def udp_ports(self) -> list[int]:
        return [self.peer.port]

    def stage_pids(self) -> dict[str, int]:
        pids = self.peer.pids()
        return {self.name: pids[0]} if pids else {}

    def delivered(self) -> float:
        return self.peer.counter_total()

    def loss_counters(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.peer.stats().items()}


def udp_drops(system: System) -> int:
    return sum(procstat.udp_drops(port) for port in system.udp_ports())


def udp_backlog(system: System) -> int:
    return sum(procstat.udp_rx_queue(port) for port in system.udp_ports())


def send_series_once(system: System, series: int, per_datagram: int = 20) -> int:
    """Sends ``series`` distinct series, a quarter each counters, gauges, timers and sets, once.

    Returns the counter total sent, for the caller to wait on.
    """
    kinds = (("c", "1"), ("g", "42"), ("ms", "12.5"), ("s", "member"))
    lines = [f"{LOAD_PREFIX}rss.{code}{i}:{value}|{code}|#env:bench"
             for i in range(series) for code, value in [kinds[i % 4]]]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for start in range(0, len(lines), per_datagram):
            sock.sendto("\n".join(lines[start:start + per_datagram]).encode(), ("127.0.0.1", system.target_port()))
            time.sleep(0.001)  # 50 small datagrams: pacing keeps them clear of any receive buffer limit
    return sum(1 for i in range(series) if i % 4 == 0)
