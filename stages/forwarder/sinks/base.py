"""The sink contract: what a sink is handed, what it may and may not do, and what its config offers.

A sink only writes. The forwarder's :class:`~stages.forwarder.fanout.SinkRunner` gives each sink
its own thread, bounded buffer, retries and drop counting; a sink never sees another sink.

**What it is handed.** :meth:`Sink.write` gets one :class:`Flush`: the ``header`` of one shard's
interval (:class:`~stages.common.contract.FlushHeader`), its ``aggregates`` (the contract's aggregate
objects) and their ``size`` on the wire. A sink reads them with :meth:`Flush.chunks` (or
:meth:`Flush.each`), which decodes a thousand at a time: the buffers hold flushes encoded, and a
sink that encodes and delivers a chunk at a time
(:class:`~stages.forwarder.sinks.progress.ChunkedProgress`, or writing as it encodes) holds one
chunk's aggregates and output, not the flush's. The same
aggregate objects may go to every sink, so a sink **must not mutate them** (nor keep them once
``write`` returned): it reads them, encodes them, and keeps only what it made itself.

**What the runner guarantees.**

- ``open`` and ``write`` are called on the sink's own thread, one at a time; anything else of the
  sink that runs on another thread (a server answering scrapes) locks what it shares with
  ``write``. ``close`` is called once, on the thread that stops the forwarder, after the sink's
  thread ended, whether or not ``open`` ever succeeded (a sink a reload removed or changed: on
  a sink thread, once its last write is over); a ``write`` still blocked a second past the stop
  deadline is abandoned, and ``close`` then runs beside it.
- ``open`` is called before the first ``write``, and again after each failure until it succeeds;
  after that, never again: a ``write`` that finds its connection lost opens a new one itself.
- Flushes come in order, one at a time. A ``write`` that raises a *retriable* :class:`SinkError`
  is called again with backoff (0.5 s doubling to 5 s) with **the very same** :class:`Flush`
  object, and with nothing else until it is delivered or dropped: a sink that delivers part of a
  flush before failing resumes where it stopped (:class:`~stages.forwarder.sinks.progress.FlushProgress`,
  or ``ChunkedProgress`` a chunk at a time), encoding once and sending nothing twice that was delivered
  (a sink whose destination takes a flush again whole, the file's after its take-back, carbon's, may
  encode it again instead). A different object is a new flush.
- A ``SinkError(retriable=False)`` drops that flush (counted as ``rejected``): the destination
  refuses the data itself, and sending it again would fail forever. Any other exception drops it
  too (counted as ``error``, logged with its traceback), and the next flush is written as usual.
  Retries stop at the stop deadline; what is left is counted as ``shutdown``. A reload that
  changes the sink hands what this instance holds to the new one, which sends it again whole
  (with the new settings); one that removes the sink gives it the stop's drain, then counts
  what is left as ``removed``.
- The error's message is logged (a retriable one at most once a minute while it repeats) and
  shown by ``pystatsd status`` until the sink delivers again: it says what to check, and never
  holds a secret.

**What it must not do.** Buffer across flushes: ``write`` returns once the flush is delivered
(or raises); what waits is the runner's buffer, bounded by the sink's ``buffer_max_aggregates``
and ``buffer_max_bytes``. Block forever: every network call has a timeout, so a stop is not held up.

**Its config** is a frozen dataclass derived from :class:`SinkConfig`, loaded from the sink's
section under ``forwarders:`` (:func:`stages.common.config.load_section`: its fields are the keys, a field
without a default is a required key, ``__post_init__`` raises ValueError naming a bad key). It
offers the buffer bounds, ``format`` and ``encoder_options`` (what ``debug_mode`` prints in place
of a remote sink) with defaults most sinks keep.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

from stages.common.contract import FlushHeader
from stages.forwarder.encoders import check_format
from stages.forwarder.encoders.options import EncoderOptions


class EncodedAggregates:
    """A flush's aggregates as they came over the wire: ``count`` of them, which ``chunks`` decodes a
    chunk at a time (:func:`stages.common.contract.flush_body_chunks`).

    A decoded aggregate takes about seven times its size on the wire (a Python dict, its keys and
    values: some 500 bytes for a gauge of 70), so a flush stays encoded in the sinks' buffers, and what
    they are bounded by (``buffer_max_bytes``) is what they hold; a sink decodes it as it encodes it.
    """

    __slots__ = ("count", "chunks")

    def __init__(self, count: int, chunks: Callable[[], Iterator[list[dict[str, Any]]]]) -> None:
        self.count = count
        self.chunks = chunks


class Flush:
    """One shard's aggregates for one interval, as the forwarder received them (encoded, or a list)."""

    __slots__ = ("header", "size", "completion", "partials", "count", "_encoded", "_decoded")

    def __init__(self, header: FlushHeader, aggregates: list[dict[str, Any]] | EncodedAggregates, size: int,
                 completion: Completion | None = None, partials: list[bytes] | None = None) -> None:
        self.header = header
        #: Bytes of the aggregates on the wire: what the sink buffers are bounded by.
        self.size = size
        #: Told when every sink is done with this flush (delivered, or dropped and counted): the runner's,
        #: not the sink's.
        self.completion = completion
        #: The interval's partials (Kafka key, value, ...: :mod:`stages.aggregator.partials`), for a sink of
        #: ``format: partials``; empty unless some sink has that format.
        self.partials: list[bytes] = partials if partials is not None else []
        self._encoded: EncodedAggregates | None
        self._decoded: list[dict[str, Any]] | None
        if isinstance(aggregates, EncodedAggregates):
            self._encoded, self._decoded = aggregates, None
        else:
            self._encoded, self._decoded = None, aggregates
        #: How many aggregates it holds, known without decoding them.
        self.count = aggregates.count if isinstance(aggregates, EncodedAggregates) else len(aggregates)

    def chunks(self) -> Iterator[list[dict[str, Any]]]:
        """The aggregates, a few thousand at a time, decoded as they are asked for (a DecodeError, which
        drops the flush, if they are not a flush body): how a sink reads them, so that the flush it
        writes costs its encoded output and one chunk, not every aggregate decoded at once. Shared by
        every sink: read, never changed."""
        if self._encoded is None:
            if self._decoded:
                yield self._decoded
            return
        yield from self._encoded.chunks()

    def each(self) -> Iterator[dict[str, Any]]:
        """Every aggregate, one after another (:meth:`chunks`)."""
        for chunk in self.chunks():
            yield from chunk

    @property
    def aggregates(self) -> list[dict[str, Any]]:
        """Every aggregate at once, decoded anew at each call: for tests; a sink reads :meth:`chunks`."""
        return self._decoded if self._decoded is not None else list(self.each())


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


@dataclass(frozen=True)
class SinkConfig(BufferConfig):
    """What every sink's config offers the forwarder, with the defaults most sinks keep."""

    @property
    def format(self) -> str:
        """The encoder format ``debug_mode`` prints this sink's flushes in.

        A sink that writes one of the formats has a ``format`` key instead (a field of that name);
        one that writes its own protocol says which format shows best what it would send.
        """
        return "json"

    @property
    def printed_format(self) -> str:
        """The encoder format ``debug_mode`` prints this sink's flushes in (its own, where it is an encoder's)."""
        return self.format

    def encoder_options(self, masked: bool = False) -> EncoderOptions:
        """What the sink tells its encoder; ``masked`` for ``debug_mode``'s printout, every secret as ``***``."""
        return EncoderOptions()

    def serves_on(self) -> str | None:
        """The TCP ``host:port`` the sink listens on (``pystatsd run`` checks it is free); None: none."""
        return None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in self.own_formats:
            check_format(self.format)

    def sole_writer_of(self) -> tuple[str, str] | None:
        """(its key, what it names) that this sink must be the only writer of (the file sink's file),
        or None; two sinks of one config naming the same are refused at load, naming each other."""
        return None

    def problems_here(self) -> list[str]:
        """What keeps this config from working on this host now (a local path that can never be opened),
        each naming its key; looked at without creating or changing anything.

        ``pystatsd check-config`` asks it (and so do ``run``, ``reload`` and ``restart``, which check
        first), not ``__post_init__``: the forwarder loads its config too, and a started sink retries
        what may yet come (a folder mounted after the start) with its flushes kept in its buffer.
        """
        return []

    #: Formats this sink writes itself, beside the encoders' (the kafka sink's ``partials``).
    own_formats: ClassVar[tuple[str, ...]] = ()
    #: Whether the sink can write records (DogStatsD events and service checks) as well as aggregates.
    writes_records: ClassVar[bool] = False

    @property
    def carries_records(self) -> bool:
        """Whether records go to this sink: one that writes them, in the json format (the one whose
        objects a record's keys fit; every other format is an aggregate's)."""
        return self.writes_records and self.format == "json"


def not_empty(value: str, key: str) -> None:
    """Raise ValueError naming ``key`` when a key that must say something is empty."""
    if not value:
        raise ValueError(f"{key}: must not be empty")


class SinkError(Exception):
    """A write or open that failed; ``retriable`` says whether the same flush may be tried again."""

    def __init__(self, message: str, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class Sink(Protocol):
    """What the forwarder needs of a sink (the module docstring says what each call may do)."""

    #: Its kind: the ``type`` of a section under ``forwarders:``, or the key of one that has none.
    name: ClassVar[str]
    #: The frozen dataclass its config section is loaded into.
    config_type: ClassVar[type[SinkConfig]]
    #: A remote sink is replaced by the console sink when ``debug_mode`` is on.
    remote: ClassVar[bool]

    def __init__(self, config: Any) -> None:
        """Built from its loaded config; connects nothing yet (that is ``open``'s)."""

    def open(self) -> None:
        """Connect or open files; raise SinkError(retriable=True) while the destination is away."""

    def write(self, flush: Flush) -> int | None:
        """Deliver one flush completely, or raise SinkError; the aggregates are left as they came.

        A destination that takes a flush but refuses part of it (OTLP's partial success) is told by the
        number of aggregates it refused: counted as dropped (``rejected``), the rest as delivered."""

    def close(self) -> None:
        """Release what ``open`` took; everything written must be out by then."""


C = TypeVar("C", bound=SinkConfig)


class NamedSink(NamedTuple):
    """One configured sink: its ``name`` under ``forwarders:`` (its row in ``pystatsd status``, its
    self-metrics' ``sink`` tag, what a reload matches it by), the sink and its buffer bounds."""

    name: str
    sink: Sink
    bounds: BufferConfig


class BaseSink(Generic[C]):
    """What every sink declares, said once in its class line, and its config kept as ``self.config``.

    ``class GraphiteSink(BaseSink[GraphiteConfig], name="graphite", config_type=GraphiteConfig,
    remote=True)``; the sink then writes ``write`` (and ``open`` and ``close`` when it holds anything).
    """

    name: ClassVar[str]
    config_type: ClassVar[type[SinkConfig]]
    remote: ClassVar[bool]

    def __init_subclass__(cls, *, name: str, config_type: type[SinkConfig], remote: bool, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name, cls.config_type, cls.remote = name, config_type, remote

    def __init__(self, config: C) -> None:
        self.config = config

    def open(self) -> None:
        """Nothing to connect or open."""

    def close(self) -> None:
        """Nothing to release."""


class _Closable(Protocol):
    def close(self) -> None: ...


def close_quietly(resource: _Closable | None) -> None:
    """Close a file or socket a sink holds; an error in closing it loses nothing more, so it is not one."""
    if resource is not None:
        with contextlib.suppress(OSError):
            resource.close()
