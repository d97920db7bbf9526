"""The wire contract between stages: the only module that knows msgpack or the frame layout.

Every message is three ZeroMQ frames (the ZeroMQ Guide's versioned framing):

0. the kind and its major version, e.g. ``b"pystatsd.batch.v1"``;
1. a header, a msgpack map, small and read first;
2. the body, a msgpack array.

Two words count two things throughout: a *metric* is one value a client sent (one statsd line,
one JSON object, one value of a packed DogStatsD line), and an *entry* is one series' accumulated
values in a batch body, which may stand for many metrics.

``pystatsd.batch.v2`` (receiver → shard K): header ``src`` (sender instance), ``epoch`` (ns at the
sender's start; a restart changes it), ``seq`` (+1 per batch per (src, epoch, shard)), ``ts`` (unix
time the batch's first datagram was read; it decides the interval), ``n`` (entries in the body),
``metrics`` (metrics the batch stands for: every metric the receiver accumulated into its
entries), ``sent_before`` (metrics of earlier batches in the same stream), ``paused`` (true on the
empty batch a receiver sends a stopping shard when it begins to hold that shard's batches: nothing of
that stream comes after it, see :mod:`stages.rundir.pause`), ``gauge_ttls`` (since v2.2; left out when
empty: a map of the series keys of the batch's gauges whose rule gives a ttl to that ttl in seconds,
:mod:`stages.receiver.identity`; a shard forgets such a gauge once idle for ``ceil(ttl / interval)``
intervals, one that does not know the key, or a batch without it, the default expiry), ``entry_metrics``
(since v2.3; left out when empty: bin, per entry of the body in body order, section by section, the
metrics it stands for as an unsigned 32-bit little-endian integer, so ``4 * n`` bytes; a shard counts
each series' metrics by it, for ``pystatsd top``; a batch without it, each entry one metric). The body is columnar:
each series once per batch, accumulated over the receiver's batch window. It is an array of five
flat arrays (see :class:`BatchBody`), each entry's fields one after another:

- ``counters``: key, sum of value / sample rate (float);
- ``gauges``: key, was set (bool: a plain value came, then the changes after it are folded in),
  value (float: the last value set plus later changes, or the sum of changes alone);
- ``sampled`` (timers, histograms, distributions): key, type (4, 5, 6), count (the sum of
  1 / sample rate), values (bin: float64 little-endian, in arrival order);
- ``sets``: key, members (array of str, each once, in arrival order);
- ``traces``: key, count (the sum of 1 / sample rate).

A key is :func:`stages.common.model.series_key`: the name and the sorted flat tags joined by ``\x1f``. A
shard merges entries in body order; a key may appear in more than one entry of a section (as v1
batches become, one entry per metric).

``pystatsd.batch.v1`` (older receivers; read for one release): the same header, with ``n`` the
metrics in the body; body a list of metrics, each a sample ``[name, type, value, rate, tags]`` (see
:mod:`stages.common.model`), read as a v2 body of one entry per metric.

``pystatsd.flush.v1`` (shard K → forwarder): header ``shard``, ``shards``, ``epoch``, ``seq`` (+1 per
flush per shard epoch), ``interval_start``, ``interval``, ``n`` (aggregates), ``final`` (true on the
last flush before a planned stop), ``seq_gaps`` (batches the shard found missing since its previous
flush), ``covers`` (per receiver stream, the first and last batch whose metrics the flush holds, with
their running metric counts), ``ack`` (true when the shard wants to know that every sink is done
with the flush: the forwarder then records it in :mod:`stages.rundir.delivery`; the fleet tier commits its
Kafka offsets by it), ``revision`` (0 for an interval's flush; 1, 2, ... for each later correction
of an interval the fleet tier already flushed: late partials merged in), ``paused`` (true on the
empty flush a shard sends a forwarder stopping for a restart when it begins to hold its flushes,
see :mod:`stages.rundir.pause`; it is in no sequence and reaches no sink); body a list of aggregates,
each a map with exactly the output-contract keys; since v1.4 a timer's, histogram's or distribution's
may carry ``buckets`` (a map: ``le``, the ascending bounds ``histogram_buckets`` gave its name, and
``counts``, the metrics at most each bound, cumulative, with one more, ``+Inf``'s, equal to its
count), left out where no bounds apply: a reader that does not know the key ignores it, and an
aggregate without it has no buckets. An optional fourth frame holds the interval's
partials (a shard whose config has a sink of ``format: partials``): a msgpack array of Kafka key,
record value, key, value, ... with each value a ``pystatsd.partial.v1``.

``pystatsd.partial.v1`` (the edge's kafka sink → the fleet tier, one Kafka record per series,
interval and host): a msgpack array of the kind, a header map and a batch v2 body of one entry
(the same body a receiver sends a shard, so a partial merges as a batch does). Header ``host``
(where the edge runs: beside the series, never one of its tags), ``src`` (``shard@epoch`` of the
edge shard's flush stream: with the host and key it names the partial, so a re-sent one is known),
``interval_start``, ``interval``; for a gauge ``seen`` (end of the interval that last changed it:
the fleet keeps the latest); for a timer-like entry with more values than the edge's bound, the
entry's values are left out and ``stats`` ([values, sum, min, max, sum of squares]) and ``sketch``
(:mod:`stages.aggregator.sketch`) stand for them; for a set with more members than the bound,
``hll`` does.

``pystatsd.records.v1`` (receiver → forwarder, on the forwarder's PULL socket beside the shards'
flushes): DogStatsD events and service checks, which nothing aggregates. Header ``src`` (sender
instance), ``epoch`` (ns at the sender's start), ``seq`` (+1 per message per (src, epoch)), ``n``
(records in the body); body an array of records, each a map that starts as an aggregate does
(``name``, ``type`` ``event`` or ``service_check``, ``tags`` a map of strings, ``timestamp``
unix seconds) followed by the kind's own keys (:mod:`stages.receiver.parsers.dogstatsd_records`;
their JSON shape is in docs/input-formats.md). A forwarder older than this message refuses it
as ``unknown_message`` and counts it among its bad messages. The forwarder hands the records to the
sinks that can carry them as a flush of their own, never sent over a socket: ``shard`` =
:data:`RECORDS_SHARD`, ``epoch`` and ``seq`` the records message's, ``n`` its records; they are in
no sequence and no ledger.

The forwarder's own metrics (``<self_metrics_prefix>forwarder.*``) reach its sinks as a flush too,
built in the forwarder and never sent over a socket: its header has ``shard`` =
:data:`SELF_FLUSH_SHARD` (-1: no shard made it), ``shards`` (the running shard count), ``epoch`` 0,
``seq`` 0 (it is in no sequence: the forwarder's ledger never sees it), ``interval_start`` and
``interval`` (the interval the figures describe), ``n`` (its aggregates), ``final`` false and empty
``seq_gaps`` and ``covers`` (it holds no receiver batch). :func:`self_flush_header` makes it; a sink
may tell it by :attr:`FlushHeader.from_forwarder`. The receiver's and the shards' own metrics need
nothing of the kind: the receiver's go into its batches as any metric, a shard's into its flush.

Versioning: within v1 header keys (and optional aggregate keys) may be added and readers ignore keys
they do not know. Removing or
retyping a key or changing a body layout makes v2; readers then accept v2 and v1 for one release.
"""

from __future__ import annotations

import gc
import io
import math
import mmap
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, cast

import msgpack

from stages.common.model import MetricType, series_key

BATCH_V1 = b"pystatsd.batch.v1"
BATCH_V2 = b"pystatsd.batch.v2"
FLUSH_V1 = b"pystatsd.flush.v1"
RECORDS_V1 = b"pystatsd.records.v1"
PARTIAL_V1 = "pystatsd.partial.v1"

#: A frame larger than this is refused before unpacking (msgpack sizes its limits from the input).
MAX_FRAME_BYTES = 256 * 1024 * 1024


class DecodeError(Exception):
    """A message that does not follow the contract; ``reason`` is a short counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class BatchHeader:
    src: str
    epoch: int
    seq: int
    ts: float
    #: Entries in the body (v1: metrics, one entry each).
    n: int
    #: Metrics handed on in this (src, epoch) stream to this shard before this batch.
    sent_before: int = 0
    #: Metrics this batch stands for (every metric accumulated into its entries); ``n`` if absent.
    metrics: int = -1
    #: The sender's last batch to this shard instance: it holds the later ones (:mod:`stages.rundir.pause`).
    paused: bool = False
    #: Series key → seconds: the batch's gauges a rule gives a ttl (v2.2; empty: none, and not encoded).
    gauge_ttls: dict[str, float] = field(default_factory=dict)
    #: Per body entry, in body order, the metrics it stands for (v2.3, :func:`pack_entry_metrics`; empty: not
    #: encoded, each entry one metric).
    entry_metrics: bytes = b""

    def __post_init__(self) -> None:
        if self.metrics < 0:
            object.__setattr__(self, "metrics", self.n)
        if self.entry_metrics and len(self.entry_metrics) != ENTRY_METRICS_WIDTH * self.n:
            # TypeError: decode_batch refuses the batch as bad_header, as a wrongly typed key
            raise TypeError(f"entry_metrics: {len(self.entry_metrics)} bytes for {self.n} entries")
        for key, ttl in self.gauge_ttls.items():
            # TypeError: decode_batch refuses the batch as bad_header, as a wrongly typed key
            if not isinstance(key, str) or isinstance(ttl, bool) or not isinstance(ttl, (int, float)) \
                    or not 0 < ttl < math.inf:
                raise TypeError(f"gauge_ttls: {key!r}: {ttl!r} is no positive finite number of seconds")


@dataclass(frozen=True)
class FlushHeader:
    shard: int
    shards: int
    epoch: int
    seq: int
    interval_start: float
    interval: float
    n: int
    final: bool = False
    seq_gaps: dict[str, int] = field(default_factory=dict)
    #: ``"src@epoch"`` → [first seq, sent_before of it, last seq, metrics sent through it]: the
    #: batches whose metrics this flush holds, so the forwarder can count what a crash lost.
    covers: dict[str, list[int]] = field(default_factory=dict)
    #: Record in the delivery file once every sink is done with it (:mod:`stages.rundir.delivery`).
    ack: bool = False
    #: 0, or the how-manieth correction of an interval already flushed.
    revision: int = 0
    #: The shard's last message before it holds its flushes for a forwarder pausing for a restart
    #: (:mod:`stages.rundir.pause`): no aggregates, in no sequence (``seq`` is the next flush's).
    paused: bool = False

    @property
    def from_forwarder(self) -> bool:
        """Whether this is the forwarder's own flush (:func:`self_flush_header`), not a shard's."""
        return self.shard == SELF_FLUSH_SHARD

    @property
    def of_records(self) -> bool:
        """Whether this flush holds a receiver's records (events, service checks), not aggregates."""
        return self.shard == RECORDS_SHARD


#: The ``shard`` of the forwarder's own flush (see the module docstring): no shard is numbered below 0.
SELF_FLUSH_SHARD = -1
#: The ``shard`` of the flush that hands a receiver's records to the sinks.
RECORDS_SHARD = -2
#: The ``type`` of each kind of record.
RECORD_TYPES = frozenset({"event", "service_check"})


@dataclass(frozen=True)
class RecordsHeader:
    src: str
    epoch: int
    seq: int
    #: Records in the body.
    n: int


def self_flush_header(shards: int, interval_start: float, interval: float, n: int) -> FlushHeader:
    """The header of the flush that carries the forwarder's own ``n`` aggregates for one interval."""
    return FlushHeader(shard=SELF_FLUSH_SHARD, shards=shards, epoch=0, seq=0, interval_start=interval_start,
                       interval=interval, n=n)


def _pack(obj: Any) -> bytes:
    # msgpack has no type information: packb returns bytes.
    return cast(bytes, msgpack.packb(obj, use_bin_type=True))


def _unpack(frame: bytes) -> Any:
    if len(frame) > MAX_FRAME_BYTES:
        raise DecodeError("frame_too_large", f"{len(frame)} bytes")
    # A flush body is 100,000 maps: collections during the unpack cost a third of it and find nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError("bad_msgpack", type(exc).__name__) from exc
    finally:
        if collecting:
            gc.enable()


def _header(frames: list[bytes], kind: bytes, cls: type[Any]) -> Any:
    if len(frames) != 3 and not (cls is FlushHeader and len(frames) == 4):
        raise DecodeError("bad_frame_count", str(len(frames)))
    if frames[0] != kind:
        raise DecodeError("unknown_message", repr(frames[0][:40]))
    return _checked_header(_unpack(frames[1]), cls)


def _checked_header(raw: Any, cls: type[Any]) -> Any:
    if not isinstance(raw, dict):
        raise DecodeError("bad_header", "not a map")
    known = {}
    for name, expected in _FIELD_TYPES[cls].items():
        if name in raw:
            value = raw[name]
            if (isinstance(value, bool) and expected is not bool) or not isinstance(value, expected):
                raise DecodeError("bad_header", f"{name} is {type(value).__name__}")
            known[name] = value
    try:
        return cls(**known)
    except TypeError as exc:
        raise DecodeError("bad_header", str(exc)) from exc


#: What each header key must be: a wrongly typed value is refused here, not crashed on downstream.
_FIELD_TYPES: dict[type, dict[str, type | tuple[type, ...]]] = {
    BatchHeader: {"src": str, "epoch": int, "seq": int, "ts": (int, float), "n": int, "sent_before": int,
                  "metrics": int, "paused": bool, "gauge_ttls": dict, "entry_metrics": bytes},
    FlushHeader: {"shard": int, "shards": int, "epoch": int, "seq": int, "interval_start": (int, float),
                  "interval": (int, float), "n": int, "final": bool, "seq_gaps": dict, "covers": dict,
                  "ack": bool, "revision": int, "paused": bool},
    RecordsHeader: {"src": str, "epoch": int, "seq": int, "n": int},
}


class BatchBody(NamedTuple):
    """The five flat sections of a ``pystatsd.batch.v2`` body (see the module docstring)."""

    counters: list[Any]
    gauges: list[Any]
    sampled: list[Any]
    sets: list[Any]
    traces: list[Any]

    @classmethod
    def empty(cls) -> BatchBody:
        return cls([], [], [], [], [])


#: Fields per entry, section by section, in BatchBody's order.
BODY_STRIDES: tuple[int, ...] = (2, 3, 4, 2, 2)
_BIG_ENDIAN = sys.byteorder == "big"


def _little_endian(packed: array[Any]) -> array[Any]:
    """``packed`` in little-endian order (the wire's) from the machine's, or back: swapped in place."""
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed


def pack_values(values: Sequence[float]) -> bytes:
    """Timer values as a body carries them: float64, little-endian."""
    return _little_endian(array("d", values)).tobytes()


def unpack_values(data: bytes) -> array[float]:
    packed = array("d")
    packed.frombytes(data)
    return _little_endian(packed)


#: Bytes per entry of a batch header's ``entry_metrics``: an unsigned 32-bit count.
ENTRY_METRICS_WIDTH = 4
#: The most metrics an ``entry_metrics`` count holds (an entry standing for more says this many).
ENTRY_METRICS_MAX = 2**32 - 1


def pack_entry_metrics(counts: Sequence[int]) -> bytes:
    """A header's ``entry_metrics``: each entry's metrics, uint32 little-endian (the compiled window writes
    the same bytes itself)."""
    return _little_endian(array("I", [min(count, ENTRY_METRICS_MAX) for count in counts])).tobytes()


def unpack_entry_metrics(data: bytes) -> array[int]:
    packed = array("I")
    packed.frombytes(data)
    return _little_endian(packed)


def pack_batch_body(body: BatchBody) -> bytes:
    """The body frame; the compiled window (stages/window.c) writes the same bytes itself."""
    return _pack(list(body))


def encode_batch(header: BatchHeader, body: bytes) -> list[bytes]:
    """A batch of a packed body (:func:`pack_batch_body`, or the compiled window's own); ``gauge_ttls``
    and ``entry_metrics`` only when it has any, so a batch without is as v2.1 wrote it."""
    fields = asdict(header)
    if not header.gauge_ttls:
        del fields["gauge_ttls"]
    if not header.entry_metrics:
        del fields["entry_metrics"]
    return [BATCH_V2, _pack(fields), body]


def decode_batch(frames: list[bytes]) -> tuple[BatchHeader, bytes]:
    """The header of a batch, and its v2 body frame (a v1 batch's metrics packed as one entry each).

    The body is checked as it is merged (:func:`decode_batch_body`, or the compiled bucket).
    """
    kind = frames[0] if frames else b""
    header: BatchHeader = _header(frames, BATCH_V1 if kind == BATCH_V1 else BATCH_V2, BatchHeader)
    if kind == BATCH_V1:
        body = _unpack(frames[2])
        if not isinstance(body, list):
            raise DecodeError("bad_body", "not an array")
        return header, pack_batch_body(_v1_body(body))
    # Not unpacked here, but refused at the same size an unpack would refuse.
    if len(frames[2]) > MAX_FRAME_BYTES:
        raise DecodeError("frame_too_large", f"{len(frames[2])} bytes")
    return header, frames[2]


def decode_batch_body(frame: bytes) -> BatchBody:
    """A v2 body frame, its sections checked for whole entries (their fields are checked as merged)."""
    body = _unpack(frame)
    if not isinstance(body, list) or len(body) != len(BODY_STRIDES) or not all(
            isinstance(section, list) and len(section) % stride == 0
            for section, stride in zip(body, BODY_STRIDES, strict=True)):
        raise DecodeError("bad_body", "not five sections of whole entries")
    return BatchBody(*body)


def _v1_body(samples: list[Any]) -> BatchBody:
    body = BatchBody.empty()
    try:
        for name, mtype, value, rate, tags in samples:
            key = series_key(name, tuple(tags))
            if mtype == MetricType.COUNTER:
                body.counters.extend((key, value / rate))
            elif mtype in (MetricType.GAUGE, MetricType.GAUGE_DELTA):
                body.gauges.extend((key, mtype == MetricType.GAUGE, float(value)))
            elif mtype == MetricType.SET:
                body.sets.extend((key, [str(value)]))
            elif mtype == MetricType.TRACE:
                body.traces.extend((key, 1.0 / rate))
            else:
                body.sampled.extend((key, mtype, 1.0 / rate, pack_values([value])))
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise DecodeError("bad_body", f"v1 sample: {exc}") from exc
    return body


def encode_flush(header: FlushHeader, aggregates: list[dict[str, Any]] | memoryview,
                 partials: list[bytes] | None = None) -> list[bytes]:
    """The flush's frames; ``aggregates`` a list, or a body :class:`FlushBodyPacker` packed (the frame
    itself then: a memoryview, which ZeroMQ sends and msgpack reads as it does bytes); ``partials`` (Kafka
    key, value, key, value, ...) make a fourth."""
    body = aggregates if isinstance(aggregates, memoryview) else _pack(aggregates)
    frames = [FLUSH_V1, _pack(asdict(header)), cast(bytes, body)]
    if partials is not None:
        frames.append(_pack(partials))
    return frames


class FlushBodyPacker:
    """A flush's body frame packed as its aggregates are made, :data:`FLUSH_CHUNK` at a time: a shard
    that makes them one by one then holds one chunk of them as dicts, not the whole flush (100,000
    aggregates took some 30 MiB as dicts, 8 MiB packed).

    The body grows in an anonymous memory map, which the kernel enlarges in place (no copy, and no page
    taken before it is written): a bytes or bytearray body grown chunk by chunk, or joined at the end,
    costs twice its size at the peak. Its array header is msgpack's 32-bit form whatever the count
    (msgpack allows it), written last.
    """

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)
        # Private: a shared anonymous map cannot grow (its pages past the first size fault).
        self._body = mmap.mmap(-1, _BODY_FIRST_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._body.write(b"\xdd\x00\x00\x00\x00")
        #: Aggregates packed so far.
        self.count = 0

    def add(self, aggregates: Iterable[dict[str, Any]]) -> None:
        """Pack ``aggregates`` after those added before, taking a chunk of them at a time."""
        chunk: list[dict[str, Any]] = []
        for aggregate in aggregates:
            chunk.append(aggregate)
            if len(chunk) == FLUSH_CHUNK:
                self._pack(chunk)
                chunk = []
        if chunk:
            self._pack(chunk)

    def _pack(self, chunk: list[dict[str, Any]]) -> None:
        # Packed as one array (a call per chunk, not per aggregate), its array header cut off.
        packed = cast(bytes, self._packer.pack(chunk))
        head = len(cast(bytes, self._packer.pack_array_header(len(chunk))))
        end = self._body.tell() + len(packed) - head
        if end > len(self._body):
            self._body.resize(max(end, 2 * len(self._body)))
        with memoryview(packed) as view:
            self._body.write(view[head:])
        self.count += len(chunk)

    def body(self) -> memoryview:
        """The body frame: an array of every aggregate added, in order (a view of the map, which ZeroMQ sends
        and msgpack reads as it does bytes; nothing may be added after)."""
        self._body[1:5] = self.count.to_bytes(4, "big")
        return memoryview(self._body)[:self._body.tell()]


#: The map a flush body starts in (it doubles as it needs).
_BODY_FIRST_BYTES = 1 << 20


def decode_flush_partials(frames: list[bytes]) -> list[bytes]:
    """The flush's partials (Kafka key, value, ...), empty when it has none."""
    if len(frames) < 4:
        return []
    partials = _unpack(frames[3])
    if not isinstance(partials, list) or len(partials) % 2 or not all(isinstance(p, bytes) for p in partials):
        raise DecodeError("bad_partials", "not an array of keys and values")
    return partials


@dataclass(frozen=True)
class PartialHeader:
    host: str
    src: str
    interval_start: float
    interval: float
    #: A gauge's: the end of the interval that last changed it.
    seen: float = 0.0
    #: A timer-like entry past the bound: [values, sum, min, max, sum of squares].
    stats: list[float] = field(default_factory=list)
    sketch: bytes = b""
    hll: bytes = b""


_FIELD_TYPES[PartialHeader] = {"host": str, "src": str, "interval_start": (int, float), "interval": (int, float),
                               "seen": (int, float), "stats": list, "sketch": bytes, "hll": bytes}


def encode_partial(header: PartialHeader, body: BatchBody) -> bytes:
    """One Kafka record's value: the kind, the header (defaults left out) and a one-entry batch v2 body."""
    fields = {k: v for k, v in asdict(header).items() if v or k in ("host", "src", "interval_start", "interval")}
    return _pack([PARTIAL_V1, fields, pack_batch_body(body)])


def decode_partial(value: bytes) -> tuple[PartialHeader, BatchBody]:
    """A ``pystatsd.partial.v1`` record value; DecodeError when it is not one."""
    record = _unpack(value)
    if not isinstance(record, list) or len(record) != 3 or not isinstance(record[2], bytes):
        raise DecodeError("bad_partial", "not [kind, header, body]")
    if record[0] != PARTIAL_V1:
        raise DecodeError("unknown_message", repr(record[0])[:40])
    header: PartialHeader = _checked_header(record[1], PartialHeader)
    return header, decode_batch_body(record[2])


def decode_flush_header(frames: list[bytes]) -> FlushHeader:
    """Only the header, so a flush can be accounted for without unpacking its body."""
    header: FlushHeader = _header(frames, FLUSH_V1, FlushHeader)
    return header


def flush_body_count(frames: list[bytes]) -> int:
    """How many aggregates the flush's body holds, read from its array header alone (the body is
    decoded as a sink writes it: :func:`flush_body_chunks`)."""
    try:
        return cast(int, _body_unpacker(frames).read_array_header())
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError("bad_body", f"not an array ({type(exc).__name__})") from exc


#: Aggregates decoded at once by flush_body_chunks: a few megabytes of dicts, fast as decoding them all.
FLUSH_CHUNK = 1000


def flush_body_chunks(frames: list[bytes], size: int = FLUSH_CHUNK) -> Iterator[list[dict[str, Any]]]:
    """The flush's aggregates, ``size`` at a time: DecodeError when the body is not an array of maps."""
    unpacker = _body_unpacker(frames)
    try:
        left = unpacker.read_array_header()
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError("bad_body", f"not an array ({type(exc).__name__})") from exc
    while left > 0:
        taken = min(size, left)
        # As _unpack: collections amid thousands of new maps cost a third of the time and find nothing.
        collecting = gc.isenabled()
        gc.disable()
        try:
            chunk = [unpacker.unpack() for _ in range(taken)]
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise DecodeError("bad_msgpack", type(exc).__name__) from exc
        finally:
            if collecting:
                gc.enable()
        if not all(isinstance(a, dict) for a in chunk):
            raise DecodeError("bad_body", "not an array of maps")
        left -= taken
        yield chunk


def _body_unpacker(frames: list[bytes]) -> msgpack.Unpacker:
    if len(frames) < 3 or len(frames[2]) > MAX_FRAME_BYTES:
        raise DecodeError("bad_body", "no body frame, or one too large")
    # Read from the frame itself (a BytesIO of bytes shares them), not from a copy fed in.
    return msgpack.Unpacker(io.BytesIO(frames[2]), raw=False, strict_map_key=True, use_list=True,
                            max_buffer_size=MAX_FRAME_BYTES)


def decode_flush_body(frames: list[bytes]) -> list[dict[str, Any]]:
    body = _unpack(frames[2])
    if not isinstance(body, list) or not all(isinstance(a, dict) for a in body):
        raise DecodeError("bad_body", "not an array of maps")
    return body


def encode_records(header: RecordsHeader, records: list[dict[str, Any]]) -> list[bytes]:
    """A receiver's records (events, service checks) for the forwarder."""
    return [RECORDS_V1, _pack(asdict(header)), _pack(records)]


def decode_records(frames: list[bytes]) -> tuple[RecordsHeader, list[dict[str, Any]]]:
    """A ``pystatsd.records.v1`` message: its header and its records, each checked for the keys every
    record starts with; DecodeError when it is not one."""
    header: RecordsHeader = _header(frames, RECORDS_V1, RecordsHeader)
    records = _unpack(frames[2])
    if not isinstance(records, list) or len(records) != header.n or not all(map(_is_record, records)):
        raise DecodeError("bad_body", "not an array of n records")
    return header, records


def _is_record(record: Any) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        return False
    tags, stamp = record.get("tags"), record.get("timestamp")
    return (record.get("type") in RECORD_TYPES and isinstance(tags, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
            and isinstance(stamp, (int, float)) and not isinstance(stamp, bool))


def records_flush_header(header: RecordsHeader, shards: int, interval: float, now: float) -> FlushHeader:
    """The header of the flush that hands one records message to the sinks (see the module docstring)."""
    return FlushHeader(shard=RECORDS_SHARD, shards=shards, epoch=header.epoch, seq=header.seq,
                       interval_start=now, interval=interval, n=header.n)
