"""Which receiver batches reached the sinks inside a flush, per shard; what never did is counted.

Every batch a receiver hands on carries its stream (receiver and epoch), its seq and the metrics sent
before it in that stream; every flush says which batches of each stream its aggregates hold. A flush
whose first batch is not the one after the previous flush's last means the batches in between were
lost: in a shard that crashed with them, on the way, or in a forwarder that crashed with their flush.
The metrics they carried are known exactly from the running counts. A flush is recorded once every
sink is done with it (delivered, or dropped and counted there), so what a forwarder crash takes from
its sink buffers is counted too. Sinks finish flushes out of order (a full buffer drops a queued
flush while an older one is still being retried), so flushes are recorded in the order they were
taken, each once it and every flush of its shard taken before it are done: a flush finished early
waits (merged with the finished ones next to it, so that a sink stuck for hours holds no more than
its buffer) and is never taken for a gap. The ledger is kept in the run directory, so a restarted
forwarder goes on counting where the last one stopped. The forwarder's own flush
(:func:`stages.common.contract.self_flush_header`) holds no batch and is never recorded.

The file, ``forwarder-ledger.json``, maps ``"shard|src@epoch"`` to ``[last seq, metrics sent
through it, unix time seen]``; it has had this one shape since it was introduced, so a file any
earlier forwarder wrote loads as it is.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stages.rundir.private_file import read_private, write_private

log = logging.getLogger(__name__)

#: A stream not seen for this long (a receiver restarted long ago) is forgotten.
FORGET_AFTER_SECS = 86_400.0


@dataclass(eq=False)  # each is one flush: found in its shard's list by identity, never by its coverage
class Taken:
    """A flush taken and not recorded yet: its coverage, and whether every sink is done with it."""

    shard: int
    covers: dict[str, list[int]]
    done: bool = False

    def follows(self, earlier: Taken) -> bool:
        """Its batches go on where ``earlier``'s end, in every stream both hold (no gap between them)."""
        return all(self.covers[stream][0] == earlier.covers[stream][2] + 1
                   for stream in self.covers.keys() & earlier.covers.keys())

    def absorb(self, later: Taken) -> None:
        """Take in ``later``, which follows it: recording the two at once is recording one then the other."""
        for stream, (_, _, last, sent_through) in later.covers.items():
            first, sent_before = self.covers[stream][:2] if stream in self.covers else later.covers[stream][:2]
            self.covers[stream] = [first, sent_before, last, sent_through]


class CoverageLedger:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        #: "shard|src@epoch" → [last seq flushed, metrics sent through it, unix time seen]
        self.last: dict[str, list[float]] = self._load()
        self.lost_batches: dict[int, int] = {}
        #: shard → metrics that never reached the sinks, and the batches they were in
        self.lost_metrics: dict[int, int] = {}
        #: shard → its flushes taken and not recorded yet, in the order they were taken
        self.waiting: dict[int, list[Taken]] = {}
        self.lock = threading.Lock()

    def _load(self) -> dict[str, list[float]]:
        if self.path is None:
            return {}
        try:
            data = json.loads(read_private(self.path))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("Starting a new loss ledger: %s is unreadable (%s)", self.path, exc)
            return {}
        now = time.time()
        return {key: value for key, value in data.items() if now - value[2] < FORGET_AFTER_SECS}

    def taken(self, shard: int, covers: dict[str, list[int]]) -> Taken | None:
        """A flush is handed to the sinks: its place in its shard's order (None: it holds no batch)."""
        if not covers:
            return None
        flush = Taken(shard, {stream: list(cover) for stream, cover in covers.items()})
        with self.lock:
            self.waiting.setdefault(shard, []).append(flush)
        return flush

    def done(self, flush: Taken | None) -> None:
        """Every sink is done with a flush (from any sink thread): record it and the finished ones after
        it once every flush before it is done; count (and log) the batches missing before each."""
        if flush is None:
            return
        with self.lock:
            flush.done = True
            waiting = self.waiting[flush.shard]
            at = waiting.index(flush)
            # Merged into finished neighbours it follows, it takes no more room while the head waits.
            if at + 1 < len(waiting) and waiting[at + 1].done and waiting[at + 1].follows(flush):
                flush.absorb(waiting.pop(at + 1))
            if at > 0 and waiting[at - 1].done and flush.follows(waiting[at - 1]):
                waiting[at - 1].absorb(waiting.pop(at))
            recorded = False
            while waiting and waiting[0].done:
                self._record(flush.shard, waiting.pop(0).covers)
                recorded = True
            if recorded:
                self._save()

    def record(self, shard: int, covers: dict[str, list[int]]) -> None:
        """A flush taken and done at once."""
        self.done(self.taken(shard, covers))

    def _record(self, shard: int, covers: dict[str, list[int]]) -> None:
        for stream, (first, sent_before, last, sent_through) in covers.items():
            key = f"{shard}|{stream}"
            # A stream's batches to a shard are numbered from 0, so one first seen past 0 lost its start.
            previous = self.last.get(key) or [-1, 0, 0.0]
            if first > previous[0] + 1:
                batches, metrics = first - int(previous[0]) - 1, sent_before - int(previous[1])
                self.lost_batches[shard] = self.lost_batches.get(shard, 0) + batches
                self.lost_metrics[shard] = self.lost_metrics.get(shard, 0) + metrics
                log.error("Lost %d metrics (%d batches from %s) of shard %d: they never reached the sinks (a "
                          "shard or forwarder crash, or lost on the way)", metrics, batches, stream, shard)
            if last > previous[0]:
                self.last[key] = [last, sent_through, time.time()]

    def _save(self) -> None:
        if self.path is None:
            return
        write_private(self.path, json.dumps(self.last).encode())
