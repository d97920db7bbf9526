"""What a receiver holds and has not handed on, kept where its successor finds it after a ``kill -9``.

A receiver's open batch window, the batches it holds for a pausing shard, and the batches ZeroMQ
took but had not yet written to a shard's socket die with the process. So the receiver keeps, per
shard of its stream, the next batch's seq, the metrics handed on before it (``sent_before``) and
the metrics it holds unsent, in a small file of the run directory it has memory-mapped: each
change is a store into shared memory, no system call, and the kernel keeps the page when the
process dies. Its successor of the same name reads the file at start and, when the predecessor did
not end in a planned stop or a restart in place (each marks the file closed after handing every
batch on), ends each of its streams with one empty batch numbered past everything the predecessor
handed on or held: the forwarder's loss ledger then counts what never arrived, to the metric, as it
counts a crashed shard's (``pystatsd.forwarder.lost_metrics``). The metrics the predecessor held
count as one lost batch per shard; batches lost on the way show as a gap before it. A closing
batch sent twice (its sender killed in turn) counts nothing twice: the ledger counts a gap once.

A datagram read from the kernel but not yet parsed has no known metrics count: how many there were
is kept too, and the successor logs them.

The file, ``<receiver name>.unsent``, created 0600; little-endian; version 1:

- header, 40 bytes: magic ``b"PSDUNSNT"``, version (u32), state (u32: 0 closed, 1 running), pid
  (i64), epoch (i64: the stream's, as in its batches), shards (u32), unparsed datagrams (u32);
- then per shard, 24 bytes: next seq, sent_before of the next batch, metrics held unsent (i64 each).

A reader refuses another magic, another version or a size that does not fit (logged, nothing
counted). A change of layout is version 2, and readers then read both.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from stages.common.contract import BatchHeader
from stages.rundir.private_file import open_private, read_private, write_private

log = logging.getLogger(__name__)

MAGIC = b"PSDUNSNT"
VERSION = 1
CLOSED, RUNNING = 0, 1
HEADER = struct.Struct("<8sIIqqII")
SHARD = struct.Struct("<qqq")
#: Header fields written on their own: the state (after magic and version) and the unparsed count (last).
_U32 = struct.Struct("<I")
_STATE_AT = struct.calcsize("<8sI")
_UNPARSED_AT = HEADER.size - _U32.size


def unsent_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.unsent"


@dataclass(frozen=True)
class ShardStream:
    """What one shard's stream of a receiver had handed on, and held, when it was last written."""

    next_seq: int
    sent_before: int
    held: int


@dataclass(frozen=True)
class Predecessor:
    """A receiver's record as a successor finds it: one that ended without a planned stop."""

    pid: int
    epoch: int
    unparsed: int
    streams: list[ShardStream]

    @property
    def held(self) -> int:
        return sum(stream.held for stream in self.streams)

    def closing_headers(self, src: str, now: float) -> list[tuple[int, BatchHeader]]:
        """Per shard that ever had a batch or metrics of the stream, the empty batch that ends it: past
        every seq handed on, and one more when it held metrics (they count as one lost batch)."""
        return [(shard, BatchHeader(src=src, epoch=self.epoch, seq=stream.next_seq + (1 if stream.held else 0),
                                    ts=now, n=0, sent_before=stream.sent_before + stream.held, metrics=0))
                for shard, stream in enumerate(self.streams) if stream.next_seq or stream.held]


def encode(state: int, pid: int, epoch: int, unparsed: int, streams: list[ShardStream]) -> bytes:
    """The whole file (what a new stream starts with, and what the golden-file test fixes)."""
    return HEADER.pack(MAGIC, VERSION, state, pid, epoch, len(streams), unparsed) + b"".join(
        SHARD.pack(stream.next_seq, stream.sent_before, stream.held) for stream in streams)


def decode(data: bytes) -> tuple[int, Predecessor]:
    """The state and the record of a file's bytes; ValueError, naming what is wrong, when it is not one."""
    if len(data) < HEADER.size:
        raise ValueError(f"{len(data)} bytes, shorter than the header")
    magic, version, state, pid, epoch, shards, unparsed = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"magic {magic!r}, not {MAGIC!r}")
    if version != VERSION:
        raise ValueError(f"version {version}, this receiver reads {VERSION}")
    if len(data) != HEADER.size + shards * SHARD.size:
        raise ValueError(f"{len(data)} bytes for {shards} shards")
    streams = [ShardStream(*SHARD.unpack_from(data, HEADER.size + shard * SHARD.size)) for shard in range(shards)]
    return state, Predecessor(pid, epoch, unparsed, streams)


def read_predecessor(path: Path) -> Predecessor | None:
    """The record at ``path`` when the receiver that wrote it died without a planned stop, else None."""
    try:
        state, record = decode(read_private(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("Cannot read %s (%s): a killed predecessor's unsent metrics, if any, are not counted", path, exc)
        return None
    return record if state == RUNNING else None


class Unsent:
    """This receiver's counts, mirrored into its memory-mapped file (``path``), or kept in memory
    alone (``path`` None: a batcher under test).

    The lists are the truth; every change is stored into the mapping too, before what it describes
    happens (a batch is counted as handed on before it is sent, and taken back when ZeroMQ refuses
    it), so that the file errs, if at all, only by counting as lost what was handed on in the
    instant of the kill."""

    def __init__(self, path: Path | None, epoch: int, shards: int) -> None:
        self.path = path
        self._map: mmap.mmap | bytearray = bytearray()
        self.new_stream(epoch, shards)

    def new_stream(self, epoch: int, shards: int) -> None:
        """Start counting a new stream (at start, or on another ring once the old one's batches are sent)."""
        self.epoch = epoch
        self.next_seq = [0] * shards
        self.sent_before = [0] * shards
        #: shard → metrics taken from the window and not yet handed on or dropped (being sent, or held)
        self.pending = [0] * shards
        #: shard → the window's metrics, as last told
        self.in_window = [0] * shards
        data = encode(RUNNING, os.getpid(), epoch, 0, [ShardStream(0, 0, 0)] * shards)
        self._close_map()
        if self.path is None:
            self._map = bytearray(data)
            return
        write_private(self.path, data)
        with os.fdopen(open_private(self.path, os.O_RDWR), "r+b") as handle:
            self._map = mmap.mmap(handle.fileno(), len(data))

    def _write(self, shard: int) -> None:
        SHARD.pack_into(self._map, HEADER.size + shard * SHARD.size, self.next_seq[shard], self.sent_before[shard],
                        self.in_window[shard] + self.pending[shard])

    def reading(self, datagrams: int) -> None:
        """``datagrams`` were read from the sockets and are about to be parsed."""
        _U32.pack_into(self._map, _UNPARSED_AT, datagrams)

    def window_holds(self, shard_metrics: list[int]) -> None:
        """The window's metrics per shard now (after a parse: nothing read is unparsed any more)."""
        for shard, metrics in enumerate(shard_metrics):
            if metrics != self.in_window[shard]:
                self.in_window[shard] = metrics
                self._write(shard)
        _U32.pack_into(self._map, _UNPARSED_AT, 0)

    def window_taken(self, shard_metrics: list[int]) -> None:
        """The window's batches, ``shard_metrics`` per shard, are out of it, to be sent or held."""
        for shard, metrics in enumerate(shard_metrics):
            self.pending[shard] += metrics
            self.in_window[shard] = 0
        # The sum each shard's record holds is the same: nothing to store.

    def sending(self, shard: int, metrics: int) -> tuple[int, int]:
        """A batch of ``metrics`` is about to be handed on: its (seq, sent_before), counted as handed on."""
        seq, before = self.next_seq[shard], self.sent_before[shard]
        self.next_seq[shard], self.sent_before[shard] = seq + 1, before + metrics
        self.pending[shard] -= metrics
        self._write(shard)
        return seq, before

    def not_sent(self, shard: int, metrics: int) -> None:
        """The batch :meth:`sending` counted was refused (ZeroMQ's queue was full): still held."""
        self.next_seq[shard] -= 1
        self.sent_before[shard] -= metrics
        self.pending[shard] += metrics
        self._write(shard)

    def dropped(self, shard: int, metrics: int) -> None:
        """A batch was dropped (and counted as such): no longer held."""
        self.pending[shard] -= metrics
        self._write(shard)

    def close(self) -> None:
        """A planned stop or restart in place, every batch handed on: nothing for a successor to count."""
        _U32.pack_into(self._map, _STATE_AT, CLOSED)
        self._close_map()

    def _close_map(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
