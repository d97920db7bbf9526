"""Graphite sink: carbon's plaintext protocol (``path value timestamp``) over one kept-open TCP connection.

Paths follow statsd's Graphite backend: a counter is ``<name>.count`` (the interval's value) and
``<name>.rate`` (per second), a set or a trace ``<name>.count``, a gauge ``<name>``, a timer,
histogram or distribution ``<name>.<stat>`` (``api.latency.p90``); all under ``prefix`` when set.
Tags travel as Graphite 1.1 tags (``tag_style: graphite``: ``api.requests.count;route=/login``) or
folded into the path, sorted by key (``tag_style: path``: ``api.requests.route._login.count``).
Characters Graphite cannot take in a name, tag key or tag value become ``_``; tags with an empty
value are left out, as is a tag called ``name`` in Graphite 1.1 style (carbon keeps that tag for the
metric's own name). Carbon drops the connection on a line over 16384 bytes, losing what follows it,
so such a line (dozens of long tags) is left out and logged instead.

Carbon never answers on this port, so a connection it closed shows only as the end of the stream:
before each flush the socket is checked for that and reopened, so a flush is never written into a
connection the server has already let go (the kernel would accept it, then throw it away).
"""

from __future__ import annotations

import functools
import logging
import re
import select
import socket
from dataclasses import dataclass
from typing import Any

from pystatsd.ports import check_port
from stages.common.log_throttle import LogThrottle
from stages.common.model import whole
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig, SinkError, close_quietly, not_empty

log = logging.getLogger(__name__)

TAG_STYLES = ("graphite", "path")
#: Carbon's line receiver (Twisted's LineOnlyReceiver) closes the connection on a longer line.
MAX_LINE_BYTES = 16384
#: Types whose one value is a count of something in the interval, sent as ``<name>.count``.
COUNT_TYPES = frozenset({"counter", "set", "trace"})

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_NODE_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_DOTS = re.compile(r"\.{2,}")
# Graphite 1.1 tags: a key may not hold ';!^=', a value not ';' nor start with '~'; neither may
# hold whitespace, which ends the path in the plaintext protocol.
_TAG_KEY_UNSAFE = re.compile(r"[;!^=\s]")
_TAG_VALUE_UNSAFE = re.compile(r"[;\s]")


@functools.lru_cache(maxsize=65536)
def path_name(name: str) -> str:
    """A metric name as a Graphite path: unsafe characters to ``_``, no empty nodes."""
    return _DOTS.sub(".", _NAME_UNSAFE.sub("_", name)).strip(".") or "_"


@functools.lru_cache(maxsize=65536)
def path_node(text: str) -> str:
    """A tag key or value as one node of a Graphite path (dots included become ``_``)."""
    return _NODE_UNSAFE.sub("_", text) or "_"


@functools.lru_cache(maxsize=65536)
def graphite_tag(key: str, value: str) -> str:
    """One Graphite 1.1 ``;key=value`` tag, made valid."""
    value = _TAG_VALUE_UNSAFE.sub("_", value)
    if value.startswith("~"):
        value = "_" + value[1:]
    return f";{_TAG_KEY_UNSAFE.sub('_', key)}={value}"


@dataclass(frozen=True)
class GraphiteConfig(SinkConfig):
    host: str = "127.0.0.1"
    port: int = 2003
    prefix: str = ""
    tag_style: str = "graphite"
    timeout_secs: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        not_empty(self.host, "host")
        check_port(self.port, "port")
        if self.prefix and path_name(self.prefix) != self.prefix.strip("."):
            raise ValueError(f"prefix: {self.prefix!r} may hold only letters, digits, '_', '-' and single dots")
        if self.tag_style not in TAG_STYLES:
            raise ValueError(f"tag_style: must be one of {', '.join(TAG_STYLES)}, got {self.tag_style!r}")
        if not 0 < self.timeout_secs <= 600:
            raise ValueError("timeout_secs: must be more than 0 and at most 600")


class GraphiteLines:
    """Aggregates as carbon plaintext lines, named as the module says."""

    def __init__(self, prefix: str, tag_style: str) -> None:
        self.prefix = prefix.strip(".") + "." if prefix.strip(".") else ""
        self.tag_style = tag_style

    def lines(self, aggregate: dict[str, Any]) -> list[str]:
        stamp = whole(aggregate["timestamp"])
        return [f"{path} {float(value)!r} {stamp}" for path, value in self.values(aggregate)]

    def values(self, aggregate: dict[str, Any]) -> list[tuple[str, float]]:
        """(path, value) for every value of the aggregate."""
        if "stats" in aggregate:
            fields = list(aggregate["stats"].items())
        elif aggregate["type"] in COUNT_TYPES:
            fields = [("count", aggregate["value"])]
            if "rate" in aggregate:
                fields.append(("rate", aggregate["rate"]))
        else:
            fields = [("", aggregate["value"])]
        tags = sorted((k, v) for k, v in aggregate["tags"].items() if v)
        base = self.prefix + path_name(aggregate["name"])
        if self.tag_style == "path":
            base += "".join(f".{path_node(k)}.{path_node(v)}" for k, v in tags)
            suffix = ""
        else:
            suffix = "".join(graphite_tag(k, v) for k, v in tags if k != "name")
        return [(f"{base}.{stat}{suffix}" if stat else f"{base}{suffix}", value) for stat, value in fields]


def _peer_closed(sock: socket.socket) -> bool:
    """Carbon never sends on this connection, so anything to read is its close (or a reset)."""
    # poll, not select: select cannot watch a descriptor numbered 1024 or more.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class GraphiteSink(BaseSink[GraphiteConfig], name="graphite", config_type=GraphiteConfig, remote=True):
    def __init__(self, config: GraphiteConfig) -> None:
        super().__init__(config)
        self.address = f"{config.host}:{config.port}"
        self.formatter = GraphiteLines(config.prefix, config.tag_style)
        self.sock: socket.socket | None = None
        self.too_long = 0
        self.too_long_log = LogThrottle()

    def open(self) -> None:
        try:
            self.sock = socket.create_connection((self.config.host, self.config.port),
                                                 timeout=self.config.timeout_secs)
        except OSError as exc:
            raise SinkError(f"cannot connect to carbon at {self.address}: {exc}") from None
        log.debug("Connected to carbon at %s", self.address)

    def _payload(self, aggregates: list[dict[str, Any]]) -> bytes:
        """The lines of one chunk of a flush's aggregates."""
        lines = []
        for aggregate in aggregates:
            for line in self.formatter.lines(aggregate):
                data = line.encode("utf-8")
                if len(data) > MAX_LINE_BYTES:
                    self.too_long += 1
                    continue
                lines.append(data + b"\n")
        return b"".join(lines)

    def write(self, flush: Flush) -> None:
        if self.sock is not None and _peer_closed(self.sock):
            log.info("Carbon at %s closed the connection; reconnecting", self.address)
            self.close()
        if self.sock is None:
            self.open()
        assert self.sock is not None
        # Sent as encoded, a chunk at a time (a flush costs one chunk's lines), and again whole after a
        # failure: carbon keeps one value per path and timestamp, so a line it already had is overwritten
        # with the same value.
        too_long = self.too_long
        for chunk in flush.chunks():
            payload = self._payload(chunk)
            try:
                self.sock.sendall(payload)
            except OSError as exc:
                self.close()
                self.too_long = too_long  # counted again when the flush is
                raise SinkError(f"cannot send to carbon at {self.address}: {exc}") from None
        if self.too_long and self.too_long_log.ready():
            log.warning("Left out %d lines longer than carbon takes (%d bytes): shorten those names or tags",
                        self.too_long, MAX_LINE_BYTES)
            self.too_long = 0

    def close(self) -> None:
        close_quietly(self.sock)
        self.sock = None
