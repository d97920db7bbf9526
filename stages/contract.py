"""The wire contract between stages: the only module that knows msgpack or the frame layout.

Every message is three ZeroMQ frames (the ZeroMQ Guide's versioned framing):

0. the kind and its major version, e.g. ``b"pystatsd.batch.v1"``;
1. a header, a msgpack map, small and read first;
2. the body, a msgpack array.

``pystatsd.batch.v1`` (receiver → shard K): header ``src`` (sender instance), ``epoch`` (ns at the
sender's start; a restart changes it), ``seq`` (+1 per batch per (src, epoch, shard)), ``ts`` (unix
time the batch's first datagram was read; it decides the interval), ``n`` (samples in the body),
``metrics`` (metrics the batch stands for: the receiver sums a counter's repeats into one sample, so
it can be more than ``n``; ``n`` when absent), ``sent_before`` (metrics of earlier batches in the
same stream); body a list of samples ``[name, type, value, rate, tags]`` (see :mod:`stages.model`).

``pystatsd.flush.v1`` (shard K → forwarder): header ``shard``, ``shards``, ``epoch``, ``seq`` (+1 per
flush per shard epoch), ``interval_start``, ``interval``, ``n`` (aggregates), ``final`` (true on the
last flush before a planned stop), ``seq_gaps`` (batches the shard found missing since its previous
flush), ``covers`` (per receiver stream, the first and last batch whose samples the flush holds, with
their running sample counts); body a list of aggregates, each a map with exactly the
output-contract keys.

Versioning: within v1 header keys may be added and readers ignore keys they do not know. Removing or
retyping a key or changing a body layout makes v2; readers then accept v2 and v1 for one release.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

from stages.model import Sample

BATCH_V1 = b"pystatsd.batch.v1"
FLUSH_V1 = b"pystatsd.flush.v1"

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
    n: int
    #: Metrics handed on in this (src, epoch) stream to this shard before this batch.
    sent_before: int = 0
    #: Metrics this batch stands for (its samples, with the repeats summed into them); ``n`` if absent.
    metrics: int = -1

    def __post_init__(self) -> None:
        if self.metrics < 0:
            object.__setattr__(self, "metrics", self.n)


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
    #: ``"src@epoch"`` → [first seq, sent_before of it, last seq, samples sent through it]: the
    #: batches whose samples this flush holds, so the forwarder can count what a crash lost.
    covers: dict[str, list[int]] = field(default_factory=dict)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(frame: bytes, *, tuples: bool = False) -> Any:
    if len(frame) > MAX_FRAME_BYTES:
        raise DecodeError("frame_too_large", f"{len(frame)} bytes")
    # A flush body is 100,000 maps: collections during the unpack cost a third of it and find nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=not tuples)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError("bad_msgpack", type(exc).__name__) from exc
    finally:
        if collecting:
            gc.enable()


def _header(frames: list[bytes], kind: bytes, cls: type[Any]) -> Any:
    if len(frames) != 3:
        raise DecodeError("bad_frame_count", str(len(frames)))
    if frames[0] != kind:
        raise DecodeError("unknown_message", repr(frames[0][:40]))
    raw = _unpack(frames[1])
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
                  "metrics": int},
    FlushHeader: {"shard": int, "shards": int, "epoch": int, "seq": int, "interval_start": (int, float),
                  "interval": (int, float), "n": int, "final": bool, "seq_gaps": dict, "covers": dict},
}


def encode_batch(header: BatchHeader, samples: list[Sample]) -> list[bytes]:
    return [BATCH_V1, _pack(asdict(header)), _pack(samples)]


def decode_batch(frames: list[bytes]) -> tuple[BatchHeader, list[Sample]]:
    """Header and samples of a batch; samples come back as tuples (hashable tags)."""
    header: BatchHeader = _header(frames, BATCH_V1, BatchHeader)
    body = _unpack(frames[2], tuples=True)
    if not isinstance(body, tuple):
        raise DecodeError("bad_body", "not an array")
    return header, list(body)


def encode_flush(header: FlushHeader, aggregates: list[dict[str, Any]]) -> list[bytes]:
    return [FLUSH_V1, _pack(asdict(header)), _pack(aggregates)]


def decode_flush_header(frames: list[bytes]) -> FlushHeader:
    """Only the header, so a flush can be accounted for without unpacking its body."""
    header: FlushHeader = _header(frames, FLUSH_V1, FlushHeader)
    return header


def decode_flush_body(frames: list[bytes]) -> list[dict[str, Any]]:
    body = _unpack(frames[2])
    if not isinstance(body, list) or not all(isinstance(a, dict) for a in body):
        raise DecodeError("bad_body", "not an array of maps")
    return body
