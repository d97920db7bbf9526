"""Kafka sink: one message per record, keyed by metric name, with a stable id header; acks=all, idempotent.

The original daemon's keys (``kafka_broker``, ``kafka_topic``, ``kafka_apikey``, ``kafka_tenant_id``)
work unchanged. The producer only ever runs on this sink's own thread (``send`` can block while
the broker is unknown), never on the forwarder's ZeroMQ loop.

Delivery: a flush is written record by record; a record whose delivery failed is sent again on the
next try, a record still in flight is waited for, never sent twice, so an outage ends with every
record delivered once and in order. While the broker is away the forwarder's bounded buffer holds
the flushes (kafka-python bounds nothing itself). Every message carries the header ``pystatsd-id``
(series + interval, plus the statistic for per-statistic records) so a consumer can drop the
duplicate that a forwarder restart may re-send.

``format: partials`` sends the interval's partials instead of its aggregates (one record per
series, keyed by the series: :mod:`stages.aggregator.partials`), for the fleet tier to merge; its
``pystatsd-id`` names the series, interval, host and the edge shard's flush stream.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stages.common.config import KafkaSecurity, Secret, kafka_brokers, resolve_secret
from stages.common.contract import FlushHeader
from stages.common.partial_bounds import PARTIALS, PartialBounds
from stages.forwarder.encoders import make_encoder
from stages.forwarder.encoders.options import EncoderOptions
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig, SinkError, not_empty
from stages.forwarder.sinks.progress import ChunkedProgress, FlushProgress

log = logging.getLogger(__name__)

ID_HEADER = "pystatsd-id"
#: The format that sends mergeable partials for the fleet tier instead of aggregates.
COMPRESSIONS = {"none": None, "gzip": "gzip", "lz4": "lz4", "zstd": "zstd"}
ACKS = {"all": "all", "-1": "all", "1": 1, "0": 0}
#: Aggregates encoded and delivered at once: a timer's are a dozen records in the original format.
CHUNK_AGGREGATES = 1000
#: How long one write waits for the broker's acknowledgements before it reports and retries.
WRITE_WAIT_SECS = 10.0
#: How long ``send`` may block while the topic's metadata is unknown (broker away, unknown topic).
MAX_BLOCK_MS = 2000
#: Reconnect attempts back off to at most this (kafka-python's own default is 30 s).
RECONNECT_BACKOFF_MAX_MS = 2000
#: How long opening the producer waits for a first broker before the sink reports and retries.
BOOTSTRAP_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class KafkaConfig(SinkConfig, KafkaSecurity):
    kafka_broker: str
    kafka_topic: str
    kafka_apikey: Secret | None = None
    kafka_apikey_env: str | None = None
    kafka_apikey_file: str | None = None
    kafka_tenant_id: str | None = None
    format: str = "original"
    include_apikey: bool = True
    cumulative_traces: bool = False
    compression: str = "none"
    acks: str = "all"
    linger_ms: int = 20
    delivery_timeout_ms: int = 120_000
    client_id: str = "pystatsd"
    #: format partials: see PartialBounds (the edge shard reads the same keys)
    partial_max_values: int = PartialBounds.partial_max_values
    partial_max_members: int = PartialBounds.partial_max_members
    own_formats: ClassVar[tuple[str, ...]] = (PARTIALS,)
    writes_records: ClassVar[bool] = True
    #: Brokers as a list, from the comma-separated ``kafka_broker``.
    brokers: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "brokers", kafka_brokers(self.kafka_broker))
        not_empty(self.kafka_topic, "kafka_topic")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression: must be one of {', '.join(COMPRESSIONS)}")
        if self.acks not in ACKS:
            raise ValueError("acks: must be all, 1 or 0")
        PartialBounds(self.partial_max_values, self.partial_max_members)  # the same checks as the edge shard's
        if self.linger_ms < 0 or self.delivery_timeout_ms < 1000:
            raise ValueError("linger_ms must be >= 0 and delivery_timeout_ms >= 1000")
        apikey = resolve_secret(self.kafka_apikey, self.kafka_apikey_env, self.kafka_apikey_file, "kafka_apikey")
        object.__setattr__(self, "kafka_apikey", apikey)
        self.check_security(apikey, "kafka_apikey")

    @property
    def printed_format(self) -> str:
        # Partials are binary: debug_mode prints the interval's aggregates instead.
        return "json" if self.format == PARTIALS else self.format

    def encoder_options(self, masked: bool = False) -> EncoderOptions:
        apikey = Secret("***") if masked and self.kafka_apikey is not None else self.kafka_apikey
        return EncoderOptions(apikey=apikey, tenant_id=self.kafka_tenant_id, include_apikey=self.include_apikey,
                              cumulative_traces=self.cumulative_traces)

    def producer_settings(self) -> dict[str, Any]:
        """kafka-python settings (the secret from security_settings)."""
        acks = ACKS[self.acks]
        settings: dict[str, Any] = {
            "bootstrap_servers": self.brokers,
            "client_id": self.client_id,
            "acks": acks,
            "enable_idempotence": acks == "all",
            "compression_type": COMPRESSIONS[self.compression],
            "linger_ms": self.linger_ms,
            "delivery_timeout_ms": self.delivery_timeout_ms,
            "request_timeout_ms": min(30_000, self.delivery_timeout_ms - self.linger_ms),
            "max_block_ms": MAX_BLOCK_MS,
            "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            **self.security_settings(),
        }
        return settings


def _accepts_tcp(broker: str) -> bool:
    host, _, port = broker.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


@dataclass(slots=True)
class _Record:
    """One message of the flush being written, and its delivery once it is sent."""

    key: bytes
    value: bytes
    id: bytes
    #: kafka-python's FutureRecordMetadata (the library has no types).
    future: Any = None

    def delivered(self) -> bool:
        return self.future is not None and bool(self.future.succeeded())


def record_id(aggregate: dict[str, Any], index: int, count: int, revision: int = 0) -> bytes:
    """Stable across restarts: the same series and interval always give the same id; a fleet
    correction of it (``revision`` 1, 2, ...) another, so that a consumer dropping duplicates keeps it."""
    series = "\x00".join([aggregate["name"], aggregate["type"], *sorted(f"{k}={v}" for k, v in
                                                                         aggregate["tags"].items())])
    digest = hashlib.blake2b(series.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    suffix = f"/{index}" if count > 1 else ""
    revised = f"~{revision}" if revision else ""
    return f"{digest}@{aggregate['timestamp']}{suffix}{revised}".encode()


def records_id(header: FlushHeader, index: int) -> bytes:
    """An event's or a service check's: its receiver's records message (stream and seq) and its place in
    it, so two alike sent apart keep their own ids."""
    return f"records@{header.epoch}.{header.seq}/{index}".encode()


def partial_id(key: bytes, value: bytes) -> bytes:
    """A partial's value names its series (the key), interval, host and flush stream: the same partial
    sent again has the same id."""
    return hashlib.blake2b(key + b"\x00" + value, digest_size=16).hexdigest().encode()


class KafkaSink(BaseSink[KafkaConfig], name="kafka", config_type=KafkaConfig, remote=True):
    def __init__(self, config: KafkaConfig) -> None:
        super().__init__(config)
        self.encoder = make_encoder(config.printed_format, config.encoder_options())
        #: kafka-python's KafkaProducer once open (the library has no types).
        self.producer: Any = None
        #: A part is a record, which keeps its own delivery: records are acknowledged out of order. A
        #: flush's aggregates are encoded and delivered a chunk at a time (a flush of 100,000 timers is a
        #: million records); its partials, already held as the records' keys and values, at once.
        self.progress: ChunkedProgress[_Record] = ChunkedProgress(self._encode_chunk, CHUNK_AGGREGATES)
        self.partials_progress: FlushProgress[_Record] = FlushProgress(self._partial_records)
        config.warn_insecure(log)
        if config.format == "original" and config.include_apikey and config.kafka_apikey is not None:
            log.info("The original format copies kafka_apikey into every message (include_apikey: false stops it)")

    def open(self) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            self.producer = KafkaProducer(**self.config.producer_settings())
            return
        except KafkaError as exc:
            message = self._explain(exc)
        # kafka-python 3.0 leaves a failed producer's sockets in a reference cycle: without this a
        # broker away for hours would cost three file descriptors per retry. (Outside the except
        # block, whose traceback would keep the producer alive.)
        gc.collect()
        raise SinkError(message)

    @staticmethod
    def _partial_records(flush: Flush) -> list[_Record]:
        keys, values = flush.partials[0::2], flush.partials[1::2]
        return [_Record(key, value, partial_id(key, value)) for key, value in zip(keys, values, strict=True)]

    def _encode(self, flush: Flush) -> list[_Record]:
        """Every record of the flush's aggregates at once (a write makes them a chunk at a time)."""
        records: list[_Record] = []
        first = 0
        for chunk in flush.chunks():
            records += self._encode_chunk(flush, chunk, first)
            first += len(chunk)
        return records

    def _encode_chunk(self, flush: Flush, chunk: list[dict[str, Any]], first: int) -> list[_Record]:
        """The records of one chunk of the flush's aggregates, whose first is the flush's ``first``."""
        records: list[_Record] = []
        header = flush.header
        for n, aggregate in enumerate(chunk, first):
            key = aggregate["name"].encode("utf-8")
            values = list(self.encoder.encode(aggregate))
            if header.of_records:  # an event or service check: in json, one value each
                records.extend(_Record(key, value, records_id(header, n)) for value in values)
                continue
            records.extend(_Record(key, value, record_id(aggregate, i, len(values), header.revision))
                           for i, value in enumerate(values))
        return records

    def write(self, flush: Flush) -> None:
        if self.config.format == PARTIALS:
            self._deliver(self.partials_progress.resume(flush), self.partials_progress)
            self.partials_progress.finish()
            return
        for records in self.progress.resume(flush):
            self._deliver(records, self.progress)
        self.progress.finish()

    def _deliver(self, records: list[_Record], progress: FlushProgress[_Record] | ChunkedProgress[_Record]) -> None:
        """Send the records not delivered nor in flight and wait for every one: ``progress`` is told how many
        from the first are delivered, and a retriable SinkError raised unless all are."""
        from kafka.errors import KafkaError, KafkaTimeoutError

        error: Exception | None = None
        for record in records:
            if record.future is not None and not record.future.failed():
                continue  # delivered, or in flight: waited for below, never sent twice
            try:
                record.future = self.producer.send(self.config.kafka_topic, value=record.value, key=record.key,
                                                   headers=[(ID_HEADER, record.id)])
            except KafkaError as exc:
                error = exc
                break
        try:
            self.producer.flush(timeout=WRITE_WAIT_SECS)
        except KafkaTimeoutError as exc:
            error = error or exc
        if error is None:
            error = next((r.future.exception for r in records if r.future is not None and r.future.failed()), None)
        delivered = sum(1 for _ in itertools.takewhile(_Record.delivered, records))
        progress.delivered(delivered)
        if delivered < len(records):
            raise SinkError(self._explain(error), retriable=True)

    def _explain(self, error: Exception | None) -> str:
        """What went wrong, in words an operator can act on (never a secret)."""
        text = f"{type(error).__name__}: {error}" if error is not None else "not acknowledged yet"
        brokers = ",".join(self.config.brokers)
        name = type(error).__name__
        sasl = self.config.security_protocol.startswith("SASL")
        auth_hint = (f"check kafka_apikey / sasl_password, sasl_username ({self.config.sasl_username!r}) and "
                     f"sasl_mechanism ({self.config.sasl_mechanism})")
        if "Authentication" in name or "Sasl" in name:
            return f"authentication failed at {brokers}: {auth_hint} ({text})"
        if self.producer is None:
            if sasl and any(_accepts_tcp(b) for b in self.config.brokers):
                # Kafka answers a wrong password by closing the connection: the broker is up, the login is not.
                return (f"authentication failed at {brokers}: the broker accepts connections but closes them "
                        f"during SASL login; {auth_hint} ({text})")
            return f"no Kafka broker reachable at {brokers} ({text})"
        if name == "KafkaTimeoutError":
            return (f"topic {self.config.kafka_topic!r} not available at {brokers}: the broker is away or "
                    f"the topic does not exist ({text})")
        if "TopicAuthorization" in name:
            return f"not authorized to write to topic {self.config.kafka_topic!r} ({text})"
        return f"Kafka at {brokers}: {text}"

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout=5)
            self.producer = None
