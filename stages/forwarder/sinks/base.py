"""What a sink is and what it promises.

A sink only writes. The forwarder gives each sink its own thread, bounded queue, retries and drop
counting, so a sink never buffers across flushes and never sees another sink. ``write`` must not
change the aggregates it is given: every sink shares them. To be retried, ``write`` raises
:class:`SinkError` with ``retriable=True``; any other failure drops that flush (counted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from stages.contract import FlushHeader


@dataclass(frozen=True)
class Flush:
    """One shard's aggregates for one interval, as the forwarder received them."""

    header: FlushHeader
    aggregates: list[dict[str, Any]]
    #: Bytes of the aggregates on the wire: what the sink buffers are bounded by.
    size: int
    #: Told when every sink is done with this flush (delivered, or dropped and counted).
    completion: Completion | None = None


class Completion:
    """Calls ``callback`` once ``sinks`` sinks have each said they are done; safe from any thread."""

    def __init__(self, sinks: int, callback: Callable[[], None]) -> None:
        self.remaining = sinks
        self.callback = callback
        self.lock = threading.Lock()

    def done(self) -> None:
        with self.lock:
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self.callback()


@dataclass(frozen=True, kw_only=True)
class BufferConfig:
    """Keys every sink has: how much may wait for it before the oldest flushes are dropped."""

    buffer_max_aggregates: int = 200_000
    buffer_max_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.buffer_max_aggregates < 1:
            raise ValueError("buffer_max_aggregates: must be at least 1")
        if self.buffer_max_bytes < 1:
            raise ValueError("buffer_max_bytes: must be at least 1")


class SinkError(Exception):
    def __init__(self, message: str, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class Sink(Protocol):
    #: The key under ``forwarders:`` that selects this sink.
    name: ClassVar[str]
    #: The frozen dataclass its config section is loaded into.
    config_type: ClassVar[type[Any]]
    #: A remote sink is replaced by the console sink when ``debug_mode`` is on.
    remote: ClassVar[bool]

    def open(self) -> None:
        """Connect or open files; raise SinkError(retriable=True) while the destination is away."""

    def write(self, flush: Flush) -> None:
        """Deliver one flush completely, or raise SinkError."""

    def close(self) -> None:
        """Release what ``open`` took; everything written must be out by then."""
