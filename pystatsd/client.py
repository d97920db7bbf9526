"""Send metrics to pystatsd over UDP, as the original daemon's JSON or as statsd lines.

    from pystatsd.client import Client

    metrics = Client("127.0.0.1", 5090, prefix="shop", tags={"service": "cart"})
    metrics.incr("orders", route="/checkout")
    metrics.guage("queue.depth", 12)            # the original agent's spelling; gauge() too
    with metrics.timer("db.query", table="orders"):
        ...

Sending never raises into the application: a metric that cannot be sent (the daemon's host does
not resolve, the socket buffer is full, a value is not a finite number) is counted in
:attr:`Client.errors` and logged once. Each call sends one datagram, except inside ``with client:``
or with ``batch=True``, where metrics are packed into datagrams of up to ``max_datagram`` bytes and
sent when one is full, at :meth:`Client.flush` and when the ``with`` block ends. One client may be
shared by every thread.

With ``protocol="json"`` (the default) an unbatched metric is one JSON object per datagram, the
original pystatsd's format: a gauge is sent as ``guage``, a counter's value as ``count``, a trace
with no value. Batches are one object per line, which only pystatsd 2 reads. With
``protocol="statsd"`` metrics are statsd lines with DogStatsD tags, except traces, which statsd has
no type for and which go as JSON (pystatsd tells the two apart per datagram).
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import numbers
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from pystatsd.ports import check_port

log = logging.getLogger(__name__)

#: Fits an Ethernet frame (1500) after IPv6 and UDP headers with room to spare.
DEFAULT_MAX_DATAGRAM = 1432
#: The largest UDP payload over IPv4.
MAX_UDP_PAYLOAD = 65507
PROTOCOLS = ("json", "statsd")

#: JSON keys that are never tags: a tag by one of these names would change the metric itself.
RESERVED_TAGS = frozenset({"metric_name", "metric_type", "value", "count", "sample_rate"})

#: kind → (JSON metric_type, statsd type code); a trace has no statsd type.
_TYPES: dict[str, tuple[str, str | None]] = {
    "counter": ("counter", "c"),
    "gauge": ("guage", "g"),  # the original daemon knew only this spelling; pystatsd 2 takes both
    "timer": ("timer", "ms"),
    "histogram": ("histogram", "h"),
    "distribution": ("distribution", "d"),
    "set": ("set", "s"),
    "trace": ("trace", None),
}

# Characters that would end a statsd name or tag key (both before a ":") or a tag value early.
_STATSD_KEY = re.compile(r"[:|,\r\n]")
_STATSD_TAG_VALUE = re.compile(r"[|,\r\n]")

P = ParamSpec("P")
R = TypeVar("R")


class InvalidMetric(ValueError):
    """A metric the client drops (and counts) instead of sending."""


def agent_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``agent.tags`` of a pystatsd config file (the original agent's extra tags); needs PyYAML."""
    try:
        import yaml
    except ImportError as exc:
        raise ImportError("reading agent.tags from a config file needs PyYAML (pip install PyYAML)") from exc
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    agent = (raw.get("agent") or {}) if isinstance(raw, dict) else {}
    tags = (agent.get("tags") or {}) if isinstance(agent, dict) else {}
    if not isinstance(tags, dict):
        raise ValueError(f"{path}: agent.tags must be a map of tags")
    return {str(key): _tag_text(value) for key, value in tags.items()}


class Client:
    """A thread-safe UDP metrics client; see the module documentation."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5090, prefix: str | None = None,
                 tags: Mapping[str, Any] | None = None, protocol: str = "json", *, host_tag: bool = False,
                 agent_config: str | os.PathLike[str] | None = None, batch: bool = False,
                 max_datagram: int = DEFAULT_MAX_DATAGRAM) -> None:
        """``host_tag`` adds ``host`` (this machine's name) and ``agent_config`` the ``agent.tags``
        of that config file to every metric, as the original agent did; ``tags`` and each call's
        own tags win over them."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        check_port(port, "port")
        if not 64 <= max_datagram <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_datagram must be between 64 and {MAX_UDP_PAYLOAD}, not {max_datagram}")
        default_tags: dict[str, str] = {}
        if host_tag:
            default_tags["host"] = socket.gethostname()
        if agent_config is not None:
            default_tags.update(agent_tags(agent_config))
        default_tags.update({str(key): _tag_text(value) for key, value in (tags or {}).items()})
        reserved = RESERVED_TAGS.intersection(default_tags)
        if reserved:
            raise ValueError(f"tags may not be named {', '.join(sorted(reserved))}")
        self.host = host
        self.port = port
        self.prefix = prefix.rstrip(".") + "." if prefix else ""
        self.protocol = protocol
        self.tags = default_tags
        self.batch = batch
        self.max_datagram = max_datagram
        #: Metrics sent, and metrics lost (invalid, or their datagram could not be sent).
        self.sent = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._address: Any = None
        self._open_contexts = 0
        self._buffer: list[bytes] = []
        self._buffer_bytes = 0
        self._buffer_is_json = False
        self._reported: set[str] = set()

    # The metric calls. ``rate`` < 1 sends that fraction of calls, and the daemon scales counts back up.

    def incr(self, name: str, count: float = 1, rate: float = 1.0, **tags: Any) -> None:
        """Add ``count`` to a counter."""
        self._metric("counter", name, count, rate, tags)

    def decr(self, name: str, count: float = 1, rate: float = 1.0, **tags: Any) -> None:
        """Subtract ``count`` from a counter."""
        self._metric("counter", name, -count if _is_number(count) else count, rate, tags)

    def gauge(self, name: str, value: float, **tags: Any) -> None:
        """Set a gauge to ``value``."""
        self._metric("gauge", name, value, 1.0, tags)

    #: The original agent's spelling of :meth:`gauge`.
    guage = gauge

    def trace(self, name: str, **tags: Any) -> None:
        """Record one event (the original daemon's trace: the aggregate counts events per interval)."""
        self._metric("trace", name, None, 1.0, tags)

    def timing(self, name: str, ms: float | datetime.timedelta, rate: float = 1.0, **tags: Any) -> None:
        """Record a duration in milliseconds (or a ``timedelta``)."""
        if isinstance(ms, datetime.timedelta):
            ms = ms.total_seconds() * 1000.0
        self._metric("timer", name, ms, rate, tags)

    def timer(self, name: str, rate: float = 1.0, **tags: Any) -> Timer:
        """Time a ``with`` block or, as a decorator, every call of a function."""
        return Timer(self, name, rate, tags)

    def histogram(self, name: str, value: float, rate: float = 1.0, **tags: Any) -> None:
        """Record one value of a histogram."""
        self._metric("histogram", name, value, rate, tags)

    def distribution(self, name: str, value: float, rate: float = 1.0, **tags: Any) -> None:
        """Record one value of a distribution."""
        self._metric("distribution", name, value, rate, tags)

    def set(self, name: str, member: str | int, **tags: Any) -> None:
        """Add ``member`` to a set: the aggregate counts the distinct members of each interval."""
        self._metric("set", name, member, 1.0, tags)

    def send_raw(self, lines: list[str]) -> bool:
        """Send ``lines`` as they are (statsd lines or the original JSON), one datagram, whatever the
        client's prefix, tags and protocol; True when the datagram left (else counted in ``errors``)."""
        errors = self.errors
        with self._lock:
            self._send([line.encode() for line in lines])
        return self.errors == errors

    # Batching and lifetime.

    def flush(self) -> None:
        """Send every batched metric now."""
        with self._lock:
            self._send_buffer()

    def close(self) -> None:
        """Flush, then close the socket; the client opens a new one if used again."""
        with self._lock:
            self._send_buffer()
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Client:
        with self._lock:
            self._open_contexts += 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._open_contexts -= 1
            self._send_buffer()

    # Encoding and sending.

    def _metric(self, kind: str, name: str, value: Any, rate: float, tags: Mapping[str, Any]) -> None:
        try:
            if not (isinstance(rate, (int, float)) and 0.0 < rate <= 1.0):
                raise InvalidMetric(f"sample rate {rate!r} is not in (0, 1]")
            if rate < 1.0 and random.random() >= rate:
                return
            payload, is_json = self._encode(kind, name, value, rate, tags)
        except InvalidMetric as exc:
            with self._lock:
                self.errors += 1
                self._report("invalid", "pystatsd client dropped a metric: %s", exc)
            return
        with self._lock:
            if not (self.batch or self._open_contexts):
                self._send([payload])
                return
            if self._buffer and (is_json != self._buffer_is_json
                                 or self._buffer_bytes + 1 + len(payload) > self.max_datagram):
                self._send_buffer()
            self._buffer.append(payload)
            self._buffer_bytes += len(payload) + (1 if len(self._buffer) > 1 else 0)
            self._buffer_is_json = is_json

    def _encode(self, kind: str, name: str, value: Any, rate: float,
                call_tags: Mapping[str, Any]) -> tuple[bytes, bool]:
        """One metric as (bytes, whether it is JSON); a gauge below zero in statsd is two lines."""
        if not isinstance(name, str) or not name:
            raise InvalidMetric(f"metric name {name!r} is not a non-empty string")
        reserved = RESERVED_TAGS.intersection(call_tags)
        if reserved:
            raise InvalidMetric(f"{name}: tags may not be named {', '.join(sorted(reserved))}")
        tags = dict(self.tags)
        tags.update({key: _tag_text(tag) for key, tag in call_tags.items()})
        json_type, code = _TYPES[kind]
        if kind == "set":
            if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
                raise InvalidMetric(f"{name}: set member {value!r} is not a non-empty string or an integer")
            value = str(value)
        elif kind != "trace":
            value = _number(name, value)
        full_name = self.prefix + name
        if self.protocol == "json" or code is None:
            obj: dict[str, Any] = {"metric_name": full_name, "metric_type": json_type}
            if kind == "counter":
                obj["count"] = value
            elif kind != "trace":
                obj["value"] = value
            if rate < 1.0:
                obj["sample_rate"] = rate
            obj.update(tags)
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(), True
        suffix = f"|{code}" + (f"|@{rate!r}" if rate < 1.0 else "") + _statsd_tags(tags)
        line_name = _STATSD_KEY.sub("_", full_name)
        if kind == "set":
            return f"{line_name}:{_STATSD_TAG_VALUE.sub('_', value)}{suffix}".encode(), False
        if kind == "gauge" and value < 0:
            # A signed statsd gauge value is a change, not a value: set 0, then subtract.
            return f"{line_name}:0{suffix}\n{line_name}:{value!r}{suffix}".encode(), False
        return f"{line_name}:{value!r}{suffix}".encode(), False

    def _send_buffer(self) -> None:
        """Send what is batched as one datagram (the caller holds the lock)."""
        if self._buffer:
            buffered, self._buffer, self._buffer_bytes = self._buffer, [], 0
            self._send(buffered)

    def _send(self, payloads: list[bytes]) -> None:
        """Send ``payloads`` (one metric each) joined by newlines as one datagram, counting the outcome."""
        try:
            if self._sock is None:
                family, kind, proto, _, address = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)[0]
                sock = socket.socket(family, kind, proto)
                # A full socket buffer must cost a metric, never block the application.
                sock.setblocking(False)
                self._sock, self._address = sock, address
            self._sock.sendto(b"\n".join(payloads), self._address)
        except OSError as exc:
            self.errors += len(payloads)
            self._report("send", "pystatsd client cannot send to %s:%s: %s", self.host, self.port, exc)
            return
        self.sent += len(payloads)

    def _report(self, reason: str, message: str, *args: Any) -> None:
        """Log a kind of failure once as a warning (it is counted in ``errors``), then at debug level."""
        if reason in self._reported:
            log.debug(message, *args)
        else:
            self._reported.add(reason)
            log.warning(message + " (counted in Client.errors; logged once)", *args)


class Timer:
    """Times a ``with`` block (the duration stays in :attr:`ms`) or every call of a decorated function."""

    def __init__(self, client: Client, name: str, rate: float, tags: Mapping[str, Any]) -> None:
        self.client = client
        self.name = name
        self.rate = rate
        self.tags = dict(tags)
        #: The last measured duration in milliseconds, once a ``with`` block has ended.
        self.ms: float | None = None
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.ms = (time.perf_counter() - self._start) * 1000.0
        self.client.timing(self.name, self.ms, self.rate, **self.tags)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            # A local start, not self._start: calls from several threads may overlap.
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.client.timing(self.name, (time.perf_counter() - start) * 1000.0, self.rate, **self.tags)
        return timed


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(name: str, value: Any) -> int | float:
    """``value`` as an int or a finite float, as JSON and statsd both write it."""
    if not _is_number(value):
        raise InvalidMetric(f"{name}: value {value!r} is not a number")
    if isinstance(value, int):
        return value
    number = float(value)
    if not math.isfinite(number):
        raise InvalidMetric(f"{name}: value {value!r} is not finite")
    return number


def _tag_text(value: Any) -> str:
    """A tag value as text: booleans as JSON writes them (``true``), everything else as ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _statsd_tags(tags: Mapping[str, str]) -> str:
    if not tags:
        return ""
    pairs = (f"{_STATSD_KEY.sub('_', key)}:{_STATSD_TAG_VALUE.sub('_', value)}" for key, value in tags.items())
    return "|#" + ",".join(pairs)
