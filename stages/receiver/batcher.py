"""The receiver's open window: it leaves as one batch per shard when full, when old, or at an interval edge.

The window is a :class:`Tally`: it leaves at ``batch_max_age_ms``, at an interval edge, or when it
holds :data:`WINDOW_BATCHES` full batches per shard; each shard's part goes in batches of at most
``max_samples`` samples. Repeats of a sample are counted, and the batch carries each
distinct sample once (a counter's repeats summed into one value, a set member once; timer values
and gauges as many times, and in the order, they came). A batch's header says how many metrics it
stands for, so the shards and the forwarder's ledger count metrics, not entries.

Sends never block: a shard whose queue is full (dead, stopped or slow) costs the batch, and the
metrics it stood for are counted as dropped for that shard.
"""

from __future__ import annotations

import logging
import math
import time

import zmq

from stages import contract
from stages.model import MetricType, Sample
from stages.receiver.tally import Tally
from stages.sharding import shard_for

log = logging.getLogger(__name__)

#: How often at most a warning about a full shard queue is logged.
DROP_LOG_EVERY_SECS = 10.0
COUNTER = int(MetricType.COUNTER)
SET = int(MetricType.SET)
#: Names whose shard is remembered; past this the memory starts afresh.
MAX_REMEMBERED_NAMES = 100_000
#: A window leaves early when it holds this many full batches per shard: repeats are only summed
#: within a window, so one cut at a single batch's worth would sum little when the series about
#: fill a batch, while this bounds the window's memory (a few MiB).
WINDOW_BATCHES = 8


class Batcher:
    def __init__(self, pushes: list[zmq.Socket[bytes]], src: str, max_samples: int, max_age_secs: float,
                 interval: float) -> None:
        self.pushes = pushes
        self.src = src
        self.epoch = time.time_ns()
        self.max_samples = max_samples
        self.max_age_secs = max_age_secs
        self.interval = interval
        self.tally = Tally()
        #: Unix time the window's first datagram was read.
        self.opened_at = 0.0
        shards = len(pushes)
        self.seq = [0] * shards
        #: Metrics handed to ZeroMQ per shard: each batch says how many came before it.
        self.handed_on = [0] * shards
        self.dropped = [0] * shards
        self.sent_samples = 0
        self.next_edge = 0.0
        self._shard_of: dict[str, int] = {}
        self._last_drop_log = 0.0

    def open(self, now: float) -> Tally:
        """The tally for samples read at ``now``: a new window when an interval edge has passed."""
        if now >= self.next_edge:
            self.send_all()
            self.next_edge = (math.floor(now / self.interval) + 1) * self.interval
        if not self.tally:
            self.opened_at = now
        return self.tally

    def add(self, samples: list[Sample], now: float) -> None:
        """File ``samples`` (read at ``now``) into the window."""
        self.open(now).add(samples)
        self.send_if_full()

    def send_if_full(self) -> None:
        if self.tally.entries() >= WINDOW_BATCHES * self.max_samples * len(self.pushes):
            self.send_all()

    def send_due(self, now: float) -> None:
        """Send the window if it is old enough, or its interval has ended."""
        if now >= self.next_edge or (self.tally and now - self.opened_at >= self.max_age_secs):
            self.send_all()

    def next_due(self) -> float | None:
        """Unix time the open window is due, or None when nothing is open."""
        if not self.tally:
            return None
        return min(self.opened_at + self.max_age_secs, self.next_edge)

    def send_all(self) -> None:
        """Send what the window holds, one batch per shard (more when one holds over ``max_samples``)."""
        tally, self.tally = self.tally, Tally()
        opened_at, self.opened_at = self.opened_at, 0.0
        if not tally:
            return
        shards = len(self.pushes)
        bodies: list[list[Sample]] = [[] for _ in range(shards)]
        #: metrics each body entry stands for
        weights: list[list[int]] = [[] for _ in range(shards)]
        shard_of = self._shard_of
        if len(shard_of) > MAX_REMEMBERED_NAMES:
            shard_of.clear()
        for sample, count in tally.counts.items():
            name = sample[0]
            shard = shard_of.get(name)
            if shard is None:
                shard = shard_of[name] = shard_for(name, shards)
            if count == 1 or sample[1] == SET:
                bodies[shard].append(sample)
                weights[shard].append(count)
            elif sample[1] == COUNTER:
                # value/rate once, then times count: what the shard would have summed, in one entry
                bodies[shard].append((name, COUNTER, sample[2] / sample[3] * count, 1.0, sample[4]))  # type: ignore[operator]
                weights[shard].append(count)
            else:
                bodies[shard].extend([sample] * count)
                weights[shard].extend([1] * count)
        for sample in tally.ordered:
            name = sample[0]
            shard = shard_of.get(name)
            if shard is None:
                shard = shard_of[name] = shard_for(name, shards)
            bodies[shard].append(sample)
            weights[shard].append(1)
        step = self.max_samples
        for shard, body in enumerate(bodies):
            for start in range(0, len(body), step):
                self.send(shard, body[start:start + step], sum(weights[shard][start:start + step]), opened_at)

    def send(self, shard: int, body: list[Sample], metrics: int, opened_at: float) -> None:
        header = contract.BatchHeader(src=self.src, epoch=self.epoch, seq=self.seq[shard], ts=opened_at,
                                      n=len(body), sent_before=self.handed_on[shard], metrics=metrics)
        try:
            self.pushes[shard].send_multipart(contract.encode_batch(header, body), zmq.NOBLOCK)
        except zmq.Again:
            self.dropped[shard] += metrics
            now = time.monotonic()
            if now - self._last_drop_log >= DROP_LOG_EVERY_SECS:
                self._last_drop_log = now
                log.warning("Shard %d is not taking batches (queue full): %d metrics dropped for it so far",
                            shard, self.dropped[shard])
            return
        # Only a batch ZeroMQ took uses up a seq, so a gap the shard sees is a loss in transit.
        self.seq[shard] += 1
        self.handed_on[shard] += metrics
        self.sent_samples += metrics
