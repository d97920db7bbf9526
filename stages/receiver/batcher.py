"""When the receiver's batch window leaves: when old, at an interval edge, or when full.

The window (:mod:`.window`) accumulates each series into one entry; it leaves at
``batch_max_age_ms``, at an interval edge, or when it holds :data:`WINDOW_BATCHES` full batches per
shard; each shard's part goes in batches of at most ``max_entries`` series entries. A batch's
header says how many metrics it stands for, so the shards and the forwarder's ledger count
metrics, not entries.

Sends never block: a shard whose queue is full (dead, stopped or slow) costs the batch, and the
metrics it stood for are counted as dropped for that shard.
"""

from __future__ import annotations

import logging
import math
import time

import zmq

from stages import contract
from stages.log_throttle import INPUT_LOG_EVERY_SECS, LogThrottle
from stages.model import Sample
from stages.receiver.window import Window

log = logging.getLogger(__name__)

#: A window leaves early when it holds this many full batches per shard: metrics of a series are
#: only accumulated within a window, so one cut at a single batch's worth would accumulate little
#: when the series about fill a batch, while this bounds the window's memory (a few MiB).
WINDOW_BATCHES = 8


class Batcher:
    def __init__(self, pushes: list[zmq.Socket[bytes]], src: str, window: Window, max_entries: int,
                 max_age_secs: float, interval: float) -> None:
        self.pushes = pushes
        self.src = src
        self.epoch = time.time_ns()
        self.window = window
        self.max_entries = max_entries
        self.max_age_secs = max_age_secs
        self.interval = interval
        #: Unix time the window's first datagram was read.
        self.opened_at = 0.0
        shards = len(pushes)
        self.seq = [0] * shards
        #: Metrics handed to ZeroMQ per shard: each batch says how many came before it.
        self.handed_on = [0] * shards
        self.dropped = [0] * shards
        self.sent_metrics = 0
        self.next_edge = 0.0
        self._drop_log = LogThrottle(INPUT_LOG_EVERY_SECS)

    def switch(self, pushes: list[zmq.Socket[bytes]], window: Window) -> list[zmq.Socket[bytes]]:
        """Another ring: what the window holds goes to the old one, the next batches to ``pushes``, as
        a new stream (epoch) of this receiver; returns the old ring's sockets, for the caller to close."""
        self.send_all()
        old, self.pushes, self.window = self.pushes, pushes, window
        shards = len(pushes)
        self.epoch = time.time_ns()
        self.seq = [0] * shards
        self.handed_on = [0] * shards
        # Counts per shard number go on (the self-metrics report running totals).
        self.dropped += [0] * (shards - len(self.dropped))
        return old

    def open(self, now: float) -> Window:
        """The window for metrics read at ``now``: a new one when an interval edge has passed."""
        if now >= self.next_edge:
            self.send_all()
            self.next_edge = (math.floor(now / self.interval) + 1) * self.interval
        if not self.window.metrics:
            self.opened_at = now
        return self.window

    def add(self, samples: list[Sample], now: float) -> None:
        """File ``samples`` (read at ``now``) into the window."""
        window = self.open(now)
        for sample in samples:
            window.add(sample)
        self.send_if_full()

    def send_if_full(self) -> None:
        if self.window.entries >= WINDOW_BATCHES * self.max_entries * len(self.pushes):
            self.send_all()

    def send_due(self, now: float) -> None:
        """Send the window if it is old enough, or its interval has ended."""
        if now >= self.next_edge or (self.window.metrics and now - self.opened_at >= self.max_age_secs):
            self.send_all()

    def next_due(self) -> float | None:
        """Unix time the open window is due, or None when nothing is open."""
        if not self.window.metrics:
            return None
        return min(self.opened_at + self.max_age_secs, self.next_edge)

    def send_all(self) -> None:
        """Send what the window holds, one batch per shard (more when one holds over ``max_entries``)."""
        opened_at, self.opened_at = self.opened_at, 0.0
        if not self.window.metrics:
            return
        for shard, batches in enumerate(self.window.take(self.max_entries)):
            for body, entries, metrics in batches:
                self.send(shard, body, entries, metrics, opened_at)

    def send(self, shard: int, body: bytes, entries: int, metrics: int, opened_at: float) -> None:
        header = contract.BatchHeader(src=self.src, epoch=self.epoch, seq=self.seq[shard], ts=opened_at,
                                      n=entries, sent_before=self.handed_on[shard], metrics=metrics)
        try:
            # The body is not copied into ZeroMQ's own buffer: tens of KiB a batch.
            self.pushes[shard].send_multipart(contract.encode_batch(header, body), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped[shard] += metrics
            log.debug("Dropped a batch for shard %d (queue full): %d entries, %d metrics", shard, entries, metrics)
            if self._drop_log.ready():
                log.warning("Shard %d is not taking batches (queue full): %d metrics dropped for it so far",
                            shard, self.dropped[shard])
            return
        log.debug("Sent a batch to shard %d: %d entries, %d metrics, seq %d", shard, entries, metrics,
                  self.seq[shard])
        # Only a batch ZeroMQ took uses up a seq, so a gap the shard sees is a loss in transit.
        self.seq[shard] += 1
        self.handed_on[shard] += metrics
        self.sent_metrics += metrics
