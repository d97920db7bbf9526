"""When the receiver's batch window leaves: when old, at an interval edge, or when full.

The window (:mod:`.window`) accumulates each series into one entry; it leaves at
``batch_max_age_ms``, at an interval edge, or when it holds :data:`WINDOW_BATCHES` full batches per
shard; each shard's part goes in batches of at most ``max_entries`` series entries. A batch's
header says how many metrics it stands for, so the shards and the forwarder's ledger count
metrics, not entries, and carries the ttls the rules gave its gauges (``gauge_ttls``) and each entry's
metrics (``entry_metrics``: what ``pystatsd top`` counts per series), held with it.

Sends never block: a shard whose queue is full (dead, stopped or slow) costs the batch, and the
metrics it stood for are counted as dropped for that shard.

A shard that pauses while it stops for a restart (:mod:`stages.rundir.pause`) gets one empty ``paused``
batch, then nothing: its batches are held here, in order, until the pause ends, and then sent
(those ZeroMQ has no room for yet stay held until it has). At most ``hold_max`` batches are held
per shard; what comes beyond is dropped and counted as for a full queue.

What the window and the held batches stand for, and each stream's seq and running count, are kept
where a successor finds them after a ``kill -9`` (:mod:`.unsent`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import zmq

from stages.common import contract
from stages.common.clock import SYSTEM_CLOCK, Clock
from stages.common.contract import BatchBody, BatchHeader
from stages.common.intervals import next_edge
from stages.common.log_throttle import INPUT_LOG_EVERY_SECS, LogThrottle
from stages.common.model import Sample
from stages.receiver.unsent import Predecessor, Unsent
from stages.receiver.window import GaugeTtls, Window
from stages.rundir.pause import PauseWatch

log = logging.getLogger(__name__)

#: A window leaves early when it holds this many full batches per shard: metrics of a series are
#: only accumulated within a window, so one cut at a single batch's worth would accumulate little
#: when the series about fill a batch, while this bounds the window's memory (a few MiB).
WINDOW_BATCHES = 8
#: The body of the ``paused`` batch: it stands for no metric.
EMPTY_BODY = contract.pack_batch_body(BatchBody.empty())


class Batcher:
    def __init__(self, pushes: list[zmq.Socket[bytes]], src: str, window: Window, max_entries: int,
                 max_age_secs: float, interval: float, pauses: PauseWatch, hold_max: int,
                 unsent_path: Path | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.pushes = pushes
        self.src = src
        self.clock = clock
        # The system's time even beside a test's clock: an epoch names a stream, and a stream must
        # not share its name with an earlier one (a switch with the test's clock standing still).
        self.epoch = time.time_ns()
        self.window = window
        self.max_entries = max_entries
        self.max_age_secs = max_age_secs
        self.interval = interval
        #: Unix time the window's first datagram was read.
        self.opened_at = 0.0
        shards = len(pushes)
        #: Per shard: the next seq, the metrics handed to ZeroMQ (each batch says how many came before
        #: it) and the metrics held unsent; in a file a successor reads, when ``unsent_path`` is given.
        self.unsent = Unsent(unsent_path, self.epoch, shards)
        self.dropped = [0] * shards
        self.sent_metrics = 0
        self.next_edge = 0.0
        self._drop_log = LogThrottle(INPUT_LOG_EVERY_SECS)
        self.pauses = pauses
        self.hold_max = hold_max
        #: shard → (body, entries, metrics, ts, gauge ttls, entry metrics) of the batches held for it while it
        #: pauses, oldest first
        self.held: dict[int, list[tuple[bytes, int, int, float, GaugeTtls, bytes]]] = {}

    def switch(self, pushes: list[zmq.Socket[bytes]], window: Window,
               pauses: PauseWatch) -> list[zmq.Socket[bytes]]:
        """Another ring: what the window holds goes to the old one, the next batches to ``pushes``, as
        a new stream (epoch) of this receiver; returns the old ring's sockets, for the caller to close."""
        self.send_all()
        self.release_all()
        old, self.pushes, self.window, self.pauses = self.pushes, pushes, window, pauses
        shards = len(pushes)
        self.epoch = time.time_ns()
        self.unsent.new_stream(self.epoch, shards)
        # Counts per shard number go on (the self-metrics report running totals).
        self.dropped += [0] * (shards - len(self.dropped))
        return old

    @property
    def seq(self) -> list[int]:
        """Per shard, the seq of the next batch of this stream."""
        return self.unsent.next_seq

    def open(self, now: float) -> Window:
        """The window for metrics read at ``now``: a new one when an interval edge has passed."""
        if now >= self.next_edge:
            self.send_all()
            self.next_edge = next_edge(now, self.interval)
        if not self.window.metrics:
            self.opened_at = now
        return self.window

    def add(self, samples: list[Sample], now: float) -> None:
        """File the receiver's own ``samples`` (read at ``now``) into the window, past the rules."""
        window = self.open(now)
        for sample in samples:
            window.add_own(sample)
        self.filled()

    def filled(self) -> None:
        """Metrics went into the window: counted as held, and the window sent when full."""
        self.unsent.window_holds(self.window.shard_metrics)
        self.send_if_full()

    def send_if_full(self) -> None:
        if self.window.entries >= WINDOW_BATCHES * self.max_entries * len(self.pushes):
            self.send_all()

    def send_due(self, now: float) -> None:
        """Send the window if it is old enough, or its interval has ended; held batches once their
        shard's pause has ended."""
        if self.held:
            self.follow_pauses(now)
        if now >= self.next_edge or (self.window.metrics and now - self.opened_at >= self.max_age_secs):
            self.send_all()

    def next_due(self) -> float | None:
        """Unix time the open window is due (or a held shard's pause is looked at again), or None."""
        due = min(self.opened_at + self.max_age_secs, self.next_edge) if self.window.metrics else None
        if self.held:
            return self.pauses.next_check if due is None else min(due, self.pauses.next_check)
        return due

    def follow_pauses(self, now: float) -> None:
        """Hold the batches of a shard that began a pause (after one ``paused`` batch), send a shard's
        held batches once its pause has ended."""
        paused = self.pauses.current(now)
        for shard in paused - self.held.keys():
            self.held[shard] = []
            # Not taken (no connection to queue on): nothing of this stream is on the way to it either.
            self._try_push(shard, EMPTY_BODY, 0, 0, now, {}, b"", paused=True)
            log.info("Shard %d is stopping: holding its batches until it has", shard)
        for shard in self.held.keys() - paused:
            self.release(shard)

    def release(self, shard: int) -> None:
        """Send a shard's held batches once its pause has ended. Those ZeroMQ has no room for yet (the
        next instance not bound, no connection to queue on) stay held, in order, for the next look."""
        held = self.held[shard]
        sent = 0
        while sent < len(held) and self._try_push(shard, *held[sent]):
            sent += 1
        del held[:sent]
        if held:
            log.debug("Shard %d's pause ended, but it takes no batches yet: %d still held", shard, len(held))
            return
        del self.held[shard]
        log.info("Shard %d's pause ended: sent the batches held for it", shard)

    def release_all(self) -> None:
        """Every held batch on to ZeroMQ (before the sockets close: a stop, a restart, another ring);
        what it has no room for is dropped and counted."""
        for shard, held in self.held.items():
            for batch in held:
                self._push(shard, *batch)
        self.held.clear()

    def send_all(self) -> None:
        """Send what the window holds, one batch per shard (more when one holds over ``max_entries``)."""
        opened_at, self.opened_at = self.opened_at, 0.0
        if not self.window.metrics:
            return
        self.follow_pauses(self.clock.time())
        taken = self.window.take(self.max_entries)
        self.unsent.window_taken([sum(metrics for _, _, metrics, _, _ in batches) for batches in taken])
        for shard, batches in enumerate(taken):
            for body, entries, metrics, ttls, entry_metrics in batches:
                held = self.held.get(shard)
                if held is None:
                    self._push(shard, body, entries, metrics, opened_at, ttls, entry_metrics)
                elif len(held) < self.hold_max:
                    held.append((body, entries, metrics, opened_at, ttls, entry_metrics))
                else:
                    self._drop(shard, entries, metrics)

    def _push(self, shard: int, body: bytes, entries: int, metrics: int, ts: float, ttls: GaugeTtls,
              entry_metrics: bytes) -> None:
        if not self._try_push(shard, body, entries, metrics, ts, ttls, entry_metrics):
            self._drop(shard, entries, metrics)

    def _try_push(self, shard: int, body: bytes, entries: int, metrics: int, ts: float, ttls: GaugeTtls,
                  entry_metrics: bytes, paused: bool = False) -> bool:
        """Whether ZeroMQ took the batch (it never blocks)."""
        # Counted as handed on before it is: a kill in between then shows as a gap, counted.
        seq, sent_before = self.unsent.sending(shard, metrics)
        header = BatchHeader(src=self.src, epoch=self.epoch, seq=seq, ts=ts, n=entries,
                             sent_before=sent_before, metrics=metrics, paused=paused, gauge_ttls=ttls,
                             entry_metrics=entry_metrics)
        try:
            # The body is not copied into ZeroMQ's own buffer: tens of KiB a batch.
            self.pushes[shard].send_multipart(contract.encode_batch(header, body), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            # Only a batch ZeroMQ took uses up a seq, so a gap the shard sees is a loss in transit.
            self.unsent.not_sent(shard, metrics)
            return False
        log.debug("Sent a batch to shard %d: %d entries, %d metrics, seq %d", shard, entries, metrics, seq)
        self.sent_metrics += metrics
        return True

    def end_predecessor(self, record: Predecessor, pushes: list[zmq.Socket[bytes]]) -> int:
        """Send the empty batch that ends each of a killed predecessor's streams (:mod:`.unsent`) on
        ``pushes`` (its ring's); how many ZeroMQ had no room for (their shard's loss then goes uncounted)."""
        refused = 0
        for shard, header in record.closing_headers(self.src, self.clock.time()):
            try:
                pushes[shard].send_multipart(contract.encode_batch(header, EMPTY_BODY), zmq.NOBLOCK)
            except zmq.Again:
                refused += 1
        return refused

    def _drop(self, shard: int, entries: int, metrics: int) -> None:
        self.dropped[shard] += metrics
        self.unsent.dropped(shard, metrics)
        log.debug("Dropped a batch for shard %d (queue full): %d entries, %d metrics", shard, entries, metrics)
        if self._drop_log.ready():
            log.warning("Shard %d is not taking batches (queue full): %d metrics dropped for it so far",
                        shard, self.dropped[shard])
