"""One open batch per shard; a batch leaves when full, when old, or at an interval edge.

Sends never block: a shard whose queue is full (dead, stopped or slow) costs the batch, and the
samples it carried are counted as dropped for that shard.
"""

from __future__ import annotations

import logging
import math
import time

import zmq

from stages import contract
from stages.model import Sample
from stages.sharding import shard_for

log = logging.getLogger(__name__)

#: How often at most a warning about a full shard queue is logged.
DROP_LOG_EVERY_SECS = 10.0


class Batcher:
    def __init__(self, pushes: list[zmq.Socket[bytes]], src: str, max_samples: int, max_age_secs: float,
                 interval: float) -> None:
        self.pushes = pushes
        self.src = src
        self.epoch = time.time_ns()
        self.max_samples = max_samples
        self.max_age_secs = max_age_secs
        self.interval = interval
        shards = len(pushes)
        self.open: list[list[Sample]] = [[] for _ in range(shards)]
        self.opened_at: list[float] = [0.0] * shards
        self.seq = [0] * shards
        #: Samples handed to ZeroMQ per shard: each batch says how many came before it.
        self.handed_on = [0] * shards
        self.dropped = [0] * shards
        self.sent_samples = 0
        self.next_edge = 0.0
        self._shard_of: dict[str, int] = {}
        self._last_drop_log = 0.0

    def add(self, samples: list[Sample], now: float) -> None:
        """File ``samples`` (read at ``now``) into their shards' batches."""
        if now >= self.next_edge:
            self.send_all()
            self.next_edge = (math.floor(now / self.interval) + 1) * self.interval
        shard_of, open_batches, max_samples = self._shard_of, self.open, self.max_samples
        shards = len(self.pushes)
        for sample in samples:
            shard = shard_of.get(sample[0])
            if shard is None:
                if len(shard_of) > 100_000:
                    shard_of.clear()
                shard = shard_of[sample[0]] = shard_for(sample[0], shards)
            batch = open_batches[shard]
            batch.append(sample)
            if len(batch) >= max_samples:
                self.opened_at[shard] = self.opened_at[shard] or now
                self.send(shard)
        # A batch's age counts from its first sample: stamped here, out of the per-sample loop.
        for shard, batch in enumerate(open_batches):
            if batch and not self.opened_at[shard]:
                self.opened_at[shard] = now

    def send_due(self, now: float) -> None:
        """Send every batch that is old enough, or whose interval has ended."""
        if now >= self.next_edge:
            self.send_all()
            return
        for shard, batch in enumerate(self.open):
            if batch and now - self.opened_at[shard] >= self.max_age_secs:
                self.send(shard)

    def next_due(self) -> float | None:
        """Unix time the oldest open batch is due, or None when nothing is open."""
        opened = [self.opened_at[s] for s, batch in enumerate(self.open) if batch]
        if not opened:
            return None
        return min(min(opened) + self.max_age_secs, self.next_edge)

    def send_all(self) -> None:
        for shard, batch in enumerate(self.open):
            if batch:
                self.send(shard)

    def send(self, shard: int) -> None:
        batch = self.open[shard]
        self.open[shard] = []
        header = contract.BatchHeader(src=self.src, epoch=self.epoch, seq=self.seq[shard],
                                      ts=self.opened_at[shard], n=len(batch), sent_before=self.handed_on[shard])
        self.opened_at[shard] = 0.0
        try:
            self.pushes[shard].send_multipart(contract.encode_batch(header, batch), zmq.NOBLOCK)
        except zmq.Again:
            self.dropped[shard] += len(batch)
            now = time.monotonic()
            if now - self._last_drop_log >= DROP_LOG_EVERY_SECS:
                self._last_drop_log = now
                log.warning("Shard %d is not taking batches (queue full): %d samples dropped for it so far",
                            shard, self.dropped[shard])
            return
        # Only a batch ZeroMQ took uses up a seq, so a gap the shard sees is a loss in transit.
        self.seq[shard] += 1
        self.handed_on[shard] += len(batch)
        self.sent_samples += len(batch)
