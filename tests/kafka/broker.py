"""A real single-node Apache Kafka broker (KRaft, combined mode) for tests.

The broker runs from the jars that fetch_jars.sh resolves; nothing here depends on pytest.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from harness.paths import CACHE
from harness.ports import accepts_tcp, free_ports
from harness.process import ChildProcess, ProcessError

log = logging.getLogger(__name__)

# Heap of 512 MiB is plenty for a test broker; SerialGC and C1-only JIT keep start-up and
# footprint small on a 2-core machine, where G1's and C2's background threads compete with it.
JVM_FLAGS = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]

LOG4J2_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="stdout"/></Root>
    <!-- Every config dump and request-level line would bury the lines that explain a failure. -->
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
  </Loggers>
</Configuration>
"""

# The JAAS line is a quoted string inside a properties file; refusing these characters is
# simpler than escaping for both formats at once.
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_PASSWORD_FORBIDDEN = set('"\\\n\r;')

def kafka_cache_dir() -> Path:
    """Where fetch_jars.sh keeps the broker's jars (PYSTATSD_KAFKA_CACHE overrides)."""
    return Path(os.environ.get("PYSTATSD_KAFKA_CACHE", CACHE / "kafka"))


class BrokerError(ProcessError):
    """The broker failed to start or to answer; the message carries the tail of its log."""


class KafkaBroker:
    """One Kafka JVM acting as broker and controller, listening on 127.0.0.1 (and ``hosts_address``).

    The broker is killed by the kernel if the thread that called start() exits, so call
    start() from the main thread (pytest fixtures do).
    """

    def __init__(
        self,
        work_dir: Path,
        jars_dir: Path,
        sasl_users: dict[str, str] | None = None,
        hosts_address: str | None = None,
    ) -> None:
        """``hosts_address``: an address of this machine's (a ``HostNetwork`` gateway) where a
        second plaintext listener serves the hosts in network namespaces."""
        # Absolute, because the JVM runs with work_dir as its current directory.
        self.work_dir = Path(work_dir).resolve()
        self.jars_dir = Path(jars_dir).resolve()
        self.sasl_users = dict(sasl_users or {})
        self.hosts_address = hosts_address
        for user, password in self.sasl_users.items():
            if not _USERNAME_RE.match(user):
                raise ValueError(f"SASL user name {user!r} must match {_USERNAME_RE.pattern}")
            if _PASSWORD_FORBIDDEN & set(password):
                raise ValueError(f"SASL password of {user!r} contains a quote, backslash, ';' or newline")
        self.data_dir = self.work_dir / "data"
        self.process = ChildProcess("broker", self.work_dir)
        self.log_path = self.process.log_path
        self._ports: dict[str, int] = {}
        #: what the last metadata request that failed during start-up raised, for the error message
        self._last_error: Exception | None = None

    # ----- addresses and state -------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self._port('PLAINTEXT')}"

    @property
    def sasl_bootstrap(self) -> str:
        """Address of the SASL_PLAINTEXT (PLAIN mechanism) listener."""
        if not self.sasl_users:
            raise BrokerError("this broker was created without sasl_users, so it has no SASL listener")
        return f"127.0.0.1:{self._port('SASL_PLAINTEXT')}"

    @property
    def hosts_bootstrap(self) -> str:
        """Address of the listener the hosts in network namespaces reach."""
        if not self.hosts_address:
            raise BrokerError("this broker was created without hosts_address, so it has no listener for them")
        return f"{self.hosts_address}:{self._port('HOSTS')}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def _port(self, listener: str) -> int:
        if listener not in self._ports:
            raise BrokerError("broker has not been started yet")
        return self._ports[listener]

    # ----- life cycle ----------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        """Start the JVM and return once it answers a metadata request."""
        if self.process.running():
            raise BrokerError(f"broker already running as pid {self.process.pid}")
        if not any(self.jars_dir.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"no Kafka jars in {self.jars_dir}; run tests/kafka/fetch_jars.sh")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self._ports:
            names = (["PLAINTEXT", "CONTROLLER"] + (["SASL_PLAINTEXT"] if self.sasl_users else [])
                     + (["HOSTS"] if self.hosts_address else []))
            self._ports = dict(zip(names, free_ports(len(names)), strict=True))
        props = self.work_dir / "server.properties"
        props.write_text(self._server_properties())
        log4j = self.work_dir / "log4j2.xml"
        log4j.write_text(LOG4J2_XML)
        # meta.properties exists once the log dir is formatted; formatting again would fail,
        # and restart() has to keep the data anyway.
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(props)

        cmd = [
            self._java(),
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.work_dir}",
            "-cp",
            f"{self.jars_dir}/*",
            "kafka.Kafka",
            str(props),
        ]
        log.info("starting Kafka broker on %s (log: %s)", self.bootstrap, self.log_path)
        started = time.monotonic()
        self._last_error = None
        try:
            self.process.start(cmd, self._answers_metadata, f"a metadata answer on {self.bootstrap}", timeout,
                               every=0.2)
        except ProcessError as exc:
            last = f"\n(last error: {self._last_error!r})" if self._last_error else ""
            raise BrokerError(f"{exc}{last}") from None
        log.info("Kafka broker pid %d ready after %.1fs", self.process.pid, time.monotonic() - started)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM for a clean shutdown; SIGKILL if it has not exited after `timeout` seconds."""
        if self.process.running():
            # A paused JVM cannot handle SIGTERM until it is continued.
            self.process.send_signal(signal.SIGCONT)
        self.process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the broker at once, as a crash would."""
        self.process.kill()

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets open but answers nothing, like a hung host."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 90) -> None:
        """Stop cleanly, then start again on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    # ----- topics and reading back ---------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create a topic and wait until every partition has a leader."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, bootstrap_timeout_ms=10_000)
        try:
            admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": 1}},
                wait_for_metadata=True,
            )
        finally:
            admin.close()

    def consume_all(
        self, topic: str, timeout_s: float = 10, *, absent_is_empty: bool = False
    ) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
        """Every record of `topic` up to its current end, as (key, value, headers).

        Records come in partition order, then offset order. Raises TimeoutError if the end
        offsets are not reached in time, so a short read never passes for an empty topic.
        A topic that does not exist yet raises too, after `timeout_s`, unless `absent_is_empty`:
        a test polling for records its pipeline has yet to send takes a topic the first send
        creates as holding nothing so far.
        """
        deadline = time.monotonic() + timeout_s
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
        try:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and not absent_is_empty and time.monotonic() < deadline:
                time.sleep(0.1)
                partitions = consumer.partitions_for_topic(topic)
            if not partitions and absent_is_empty:
                return []
            if not partitions:
                raise TimeoutError(f"topic {topic!r} has no partitions after {timeout_s}s")
            tps = sorted(TopicPartition(topic, p) for p in partitions)
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            records: dict[TopicPartition, list] = {tp: [] for tp in tps}
            while any(consumer.position(tp) < end[tp] for tp in tps):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    positions = {tp.partition: consumer.position(tp) for tp in tps}
                    ends = {tp.partition: end[tp] for tp in tps}
                    raise TimeoutError(f"{topic!r}: read up to {positions}, end is {ends}")
                for tp, batch in consumer.poll(timeout_ms=int(min(remaining, 1) * 1000)).items():
                    records[tp].extend(batch)
            return [
                (r.key, r.value, list(r.headers))
                for tp in tps
                for r in records[tp]
                if r.offset < end[tp]
            ]
        finally:
            consumer.close()

    def consume_with_kcat(self, topic: str, timeout_s: float = 30) -> list[bytes | None]:
        """Every value of `topic`, read by kcat (librdkafka), an independent client.

        None stands for a null value.
        """
        kcat = shutil.which("kcat")
        if kcat is None:
            raise BrokerError("kcat is not on PATH; tests/kafka/fetch_jars.sh installs it")
        # '%S' (value length, -1 for null) framing keeps values containing newlines intact.
        result = subprocess.run(
            [kcat, "-b", self.bootstrap, "-t", topic, "-C", "-e", "-o", "beginning", "-q", "-f", "%S:%s\n"],
            capture_output=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise BrokerError(f"kcat exited {result.returncode}: {result.stderr.decode(errors='replace')}")
        return _parse_kcat_framed(result.stdout)

    # ----- internals -----------------------------------------------------------------------

    def _server_properties(self) -> str:
        p = self._ports
        listeners = [f"PLAINTEXT://127.0.0.1:{p['PLAINTEXT']}", f"CONTROLLER://127.0.0.1:{p['CONTROLLER']}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{p['PLAINTEXT']}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        sasl_lines = []
        if self.hosts_address:
            # A client is told the addresses of the listener it asked, so the hosts are sent here.
            listeners.append(f"HOSTS://{self.hosts_address}:{p['HOSTS']}")
            advertised.append(f"HOSTS://{self.hosts_address}:{p['HOSTS']}")
            protocol_map.append("HOSTS:PLAINTEXT")
        if self.sasl_users:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{p['SASL_PLAINTEXT']}")
            advertised.append(f"SASL_PLAINTEXT://127.0.0.1:{p['SASL_PLAINTEXT']}")
            protocol_map.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            users = " ".join(f'user_{u}="{pw}"' for u, pw in self.sasl_users.items())
            sasl_lines = [
                "sasl.enabled.mechanisms=PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
            ]
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{p['CONTROLLER']}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={','.join(protocol_map)}",
            *sasl_lines,
            f"log.dirs={self.data_dir}",
            "auto.create.topics.enable=true",
            "num.partitions=1",
            "default.replication.factor=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
        ]
        return "\n".join(lines) + "\n"

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java:
            raise BrokerError("no java on PATH and JAVA_HOME is not set")
        return java

    def _format_storage(self, props: Path) -> None:
        classpath = f"{self.jars_dir}/*"
        base = [self._java(), "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", classpath, "kafka.tools.StorageTool"]
        cluster_id = self._run_tool([*base, "random-uuid"]).strip().splitlines()[-1]
        log.info("formatting %s for cluster %s", self.data_dir, cluster_id)
        self._run_tool([*base, "format", "-t", cluster_id, "-c", str(props)])

    def _run_tool(self, cmd: list[str]) -> str:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise BrokerError(f"{' '.join(cmd[-3:])} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def _answers_metadata(self) -> bool:
        """A real metadata request: a listening socket alone does not mean it serves."""
        # kafka-python 3.0.12 leaks a socket (ResourceWarning) on every refused connection,
        # so wait for the port to accept before sending it the real request.
        if not accepts_tcp(self._ports["PLAINTEXT"]):
            return False
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                bootstrap_timeout_ms=2000,
                request_timeout_ms=5000,
                reconnect_backoff_max_ms=500,
            )
            try:
                return bool(admin.describe_cluster()["brokers"])
            finally:
                admin.close()
        except KafkaError as exc:
            self._last_error = exc
            return False


def _parse_kcat_framed(out: bytes) -> list[bytes | None]:
    """Split kcat output written with -f '%S:%s\\n' into values."""
    values: list[bytes | None] = []
    pos = 0
    while pos < len(out):
        colon = out.index(b":", pos)
        size = int(out[pos:colon])
        start = colon + 1
        if size < 0:
            values.append(None)
            size = 0
        else:
            values.append(out[start : start + size])
        pos = start + size + 1  # skip the trailing newline
    return values
