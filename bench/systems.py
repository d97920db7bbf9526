"""The systems the benchmark drives, behind one interface: pystatsd under supervisord, and the peers.

Each system says where to send, which processes are its stages, and two cumulative readings:
what it delivered for the load's names (bench.tally.Totals: counter increments, timer samples, the
heartbeat), and its own loss counters. The runner measures a run as the difference of two
readings, so one running system serves many runs.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

from bench import peers, procstat
from bench.destinations import SinkServers
from bench.tally import COUNTER_PREFIX, GENERATED_NAME, HEARTBEAT, LOAD_PREFIX, TIMER_PREFIX, JsonLinesTail, Totals
from harness.paths import REPO
from harness.pipeline import Pipeline
from harness.ports import free_port
from harness.traffic import SteadyTraffic

SELF_PREFIX = "pystatsd."
#: pystatsd with the rule file of a web service plus Airflow (bench/rules.yaml, 50 rules): the same pipeline,
#: so the same load measures what the rules cost.
PYSTATSD_RULES = "pystatsd-rules"
RULES_FILE = REPO / "bench" / "rules.yaml"
#: pystatsd with every sink issue 26 added on beside its file sink (otlp, prometheus_remote_write, influxdb with
#: api_version 2), each to its real server on loopback (bench/destinations.py): what those sinks cost.
PYSTATSD_SINKS = "pystatsd-sinks"
#: pystatsd relaying every line (relay:) to a UDP socket on loopback that nothing reads: what the relay costs.
PYSTATSD_RELAY = "pystatsd-relay"
#: pystatsd with one thing more, each a system of its own that the report puts beside pystatsd alone.
VARIANTS = (PYSTATSD_RULES, PYSTATSD_SINKS, PYSTATSD_RELAY)
#: What each rule dropped, per rule (tag ``rule``): summed, it is what the rules dropped.
RULE_DROPPED = "pystatsd.receiver.rule_dropped"
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
    #: how often settle() looks at the output
    poll_secs: float

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def target_port(self) -> int: ...

    def udp_ports(self) -> list[int]: ...

    def stage_pids(self) -> dict[str, int]: ...

    def helper_pids(self) -> list[int]:
        """Processes the system needs beside its own, on its cores (pystatsd-sinks' servers): their CPU is
        not the system's, nor another process' disturbance."""
        ...

    def received(self) -> dict[str, float]:
        """What each destination beside the output read() reads holds so far, counted as read() counts
        delivery ({} when there is none); slow, asked between loads, never during a run."""
        ...

    def read(self) -> tuple[Totals, dict[str, float]]:
        """What it delivered so far, and its own loss counters so far."""
        ...

    def flush_phase(self) -> float | None:
        """A unix time at which it flushed, or will: its flushes come every flush interval from it (None:
        it has no flushes, or none known yet)."""
        ...


class AggregateTally(Totals):
    """Running sums over a stream of pystatsd's aggregates: the load's counters and timer samples, the
    heartbeat, and pystatsd's own loss counters."""

    def __init__(self) -> None:
        super().__init__()
        self.losses = dict.fromkeys(LOSS_METRICS, 0.0)

    def add(self, aggregate: dict[str, Any]) -> None:
        name, kind = aggregate["name"], aggregate["type"]
        if name.startswith(LOAD_PREFIX):
            counted = 0.0
            if kind == "counter":
                counted = aggregate["value"]
                self.counters += counted
            elif kind == "timer":
                counted = aggregate["stats"]["count"]
                self.timer_samples += counted
            if counted and not GENERATED_NAME.fullmatch(name):
                self.renamed += counted
        elif kind == "counter" and name == RULE_DROPPED:
            self.rule_dropped += aggregate["value"]
        elif kind == "counter" and name in self.losses:
            self.losses[name] += aggregate["value"]
        elif kind == "gauge" and name == HEARTBEAT:
            self.saw_heartbeat(aggregate["value"])


class FileTail:
    """pystatsd's file sink read as it grows."""

    def __init__(self, path: Path) -> None:
        self.tally = AggregateTally()
        self.lines = JsonLinesTail(path, self.tally.add)

    def poll(self) -> AggregateTally:
        self.lines.poll()
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


def rules_config(path: Path = RULES_FILE) -> dict[str, Any]:
    """The rule keys of ``path`` (a pystatsd config), for a pipeline whose config lives elsewhere: the mapping
    file's path made absolute, as the file reads it relative to itself."""
    config = yaml.safe_load(path.read_text())
    if "mapping_config" in config:
        config["mapping_config"] = str(path.parent / config["mapping_config"])
    return config


class PystatsdSystem:
    """The real pipeline under supervisord (harness/pipeline.py), read back from its file or Kafka sink; a
    variant (VARIANTS) is the same with one thing more: PYSTATSD_RULES bench/rules.yaml's rules,
    PYSTATSD_SINKS the new sinks and their servers, PYSTATSD_RELAY the relay."""

    def __init__(self, shards: int, flush_interval: float, kafka_broker: str | None = None,
                 extra_receivers: int = 0, variant: str = "pystatsd", relay: bool = False) -> None:
        self.name = self.variant = variant
        self.rules = variant == PYSTATSD_RULES
        #: With ``relay``, the receiver relays every line to a UDP socket on loopback that nothing reads
        #: (what the relay costs the receiver: the sends; the kernel drops at that socket once it is full).
        self.relay = relay or variant == PYSTATSD_RELAY
        self.relay_sink: socket.socket | None = None
        self.servers: SinkServers | None = None
        self.poll_secs = 0.1
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
        try:
            if self.variant == PYSTATSD_SINKS:
                # fresh servers on every start, as the pipeline is: what they hold is then this start's
                self.servers = SinkServers()
                self.servers.start()
            config = {**self._sink_config(), **(rules_config() if self.rules else {})}
            if self.relay:
                # a socket of each start's own: stop() closes it
                self.relay_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.relay_sink.bind(("127.0.0.1", 0))
                config["relay"] = [f"udp://127.0.0.1:{self.relay_sink.getsockname()[1]}"]
            self.pipeline = Pipeline(config, shards=self.shards, flush_interval=self.flush_interval,
                                     extra_receivers=self.extra_receivers)
            if self.servers is not None:
                # beside the harness's file sink, which delivery is counted by
                self.pipeline.config["forwarders"].update(self.servers.forwarders())
                self.pipeline.save_config()
            if self.tail is None:
                self.tail = FileTail(self.pipeline.out_path)
            self.pipeline.start()
            self.pids = self._read_pids()
        except BaseException:
            # a stage or server that never came up must not leave supervisord and the others running
            self.stop()
            raise

    def _read_pids(self) -> dict[str, int]:
        assert self.pipeline is not None
        # "aggregator:aggregator-0" → "aggregator-0": the group name adds nothing to a stage's name
        pids = {program.split(":")[-1]: pid for program, (_, pid) in self.pipeline.status().items() if pid}
        pids["supervisord"] = int((self.pipeline.run_dir / "supervisord.pid").read_text())
        return pids

    def stop(self) -> None:
        try:
            if self.pipeline is not None:
                try:
                    self.pipeline.stop()
                finally:
                    self.pipeline.cleanup()
        finally:
            if self.servers is not None:
                self.servers.stop()
            if isinstance(self.tail, KafkaTail):
                self.tail.close()
            if self.relay_sink is not None:
                self.relay_sink.close()
            self.pipeline, self.tail, self.pids, self.servers, self.relay_sink = None, None, {}, None, None

    def target_port(self) -> int:
        assert self.pipeline is not None
        return self.pipeline.statsd_port

    def udp_ports(self) -> list[int]:
        assert self.pipeline is not None
        return [self.pipeline.port, self.pipeline.statsd_port]

    def stage_pids(self) -> dict[str, int]:
        return dict(self.pids)

    def helper_pids(self) -> list[int]:
        return self.servers.pids() if self.servers is not None else []

    def received(self) -> dict[str, float]:
        return self.servers.received() if self.servers is not None else {}

    def read(self) -> tuple[Totals, dict[str, float]]:
        assert self.tail is not None
        tally = self.tail.poll()
        return (Totals(tally.counters, tally.timer_samples, tally.heartbeat, tally.rule_dropped, tally.renamed),
                dict(tally.losses))

    def flush_phase(self) -> float | None:
        return 0.0  # intervals of the wall clock (a shard flushes FLUSH_GRACE_SECS after each ends)


class PeerSystem:
    """A peer from bench/peers.py, one process, on a fresh port per start."""

    def __init__(self, peer: peers.Peer, flush_interval: float, workdir: Path) -> None:
        self.peer = peer
        self.name = peer.name
        self.poll_secs = peer.poll_secs
        self.flush_interval = flush_interval
        self.workdir = workdir / peer.name

    def start(self) -> None:
        self.peer.install()
        self.peer.start(free_port(), self.flush_interval, self.workdir)

    def stop(self) -> None:
        self.peer.stop()

    def target_port(self) -> int:
        return self.peer.port

    def udp_ports(self) -> list[int]:
        return [self.peer.port]

    def stage_pids(self) -> dict[str, int]:
        pids = self.peer.pids()
        return {self.name: pids[0]} if pids else {}

    def helper_pids(self) -> list[int]:
        return []

    def received(self) -> dict[str, float]:
        return {}

    def read(self) -> tuple[Totals, dict[str, float]]:
        totals, stats = self.peer.read()
        return totals, {key: float(value) for key, value in stats.items()}

    def flush_phase(self) -> float | None:
        return self.peer.flush_phase()


def udp_drops(system: System) -> int:
    return sum(procstat.udp_drops(port) for port in system.udp_ports())


def udp_backlog(system: System) -> int:
    return sum(procstat.udp_rx_queue(port) for port in system.udp_ports())


def send(system: System, datagrams: list[bytes]) -> None:
    """Each datagram once, 1 ms apart: paced, clear of any receive buffer's limit."""
    SteadyTraffic(system.target_port(), dict(enumerate(datagrams)), every_secs=0.001, count=len(datagrams)).run()


def send_heartbeat(system: System, value: int) -> None:
    """The gauge whose delivery says the system delivered everything it took in before it."""
    send(system, [f"{HEARTBEAT}:{value}|g".encode()])


def send_series_once(system: System, series: int, per_datagram: int = 20) -> float:
    """Sends ``series`` distinct series, a quarter each counters, gauges, timers and sets, once, named as
    the load generator names each kind.

    Returns the counter increments and timer samples sent, for the caller to wait on.
    """
    kinds = ((COUNTER_PREFIX, "c", "1"), (f"{LOAD_PREFIX}g", "g", "42"), (TIMER_PREFIX, "ms", "12.5"),
             (f"{LOAD_PREFIX}s", "s", "member"))
    lines = [f"{prefix}rss{i}:{value}|{code}|#env:bench"
             for i in range(series) for prefix, code, value in [kinds[i % 4]]]
    send(system, ["\n".join(lines[start:start + per_datagram]).encode()
                  for start in range(0, len(lines), per_datagram)])
    return float(sum(1 for i in range(series) if i % 4 in (0, 2)))
