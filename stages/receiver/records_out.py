"""The receiver's events and service checks on their way to the forwarder, as ``pystatsd.records.v1``.

Nothing aggregates a record, so it skips the shards: one PUSH connected to the forwarder's PULL
socket, the one the shards' flushes come in on, and a message per burst of payloads that held any.
A send never blocks: what the forwarder's queue has no room for (a forwarder stopped, or slow) is
dropped and counted per kind, as is what was sent.
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Any

import zmq

from stages.common import contract
from stages.common.lifecycle import RECEIVER_STOP
from stages.common.log_throttle import INPUT_LOG_EVERY_SECS, LogThrottle
from stages.common.sharding import forwarder_endpoint

log = logging.getLogger(__name__)


class RecordsOut:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: Path, src: str, queue: int) -> None:
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, queue)
        self.push.connect(forwarder_endpoint(run_dir))
        self.src = src
        # As a batch stream's: the system's time names this sender's stream of messages.
        self.epoch = time.time_ns()
        self.seq = 0
        #: kind → records handed to ZeroMQ, and dropped for want of room, since the receiver started
        self.sent: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        self._drop_log = LogThrottle(INPUT_LOG_EVERY_SECS)

    def send(self, records: list[dict[str, Any]], now: float) -> None:
        """Send ``records`` (read at ``now``: a record without a timestamp of its own is stamped with its
        whole second) and empty the list, which the parsers go on filling."""
        for record in records:
            if record["timestamp"] is None:
                record["timestamp"] = int(now)
        kinds = collections.Counter(record["type"] for record in records)
        header = contract.RecordsHeader(src=self.src, epoch=self.epoch, seq=self.seq, n=len(records))
        try:
            self.push.send_multipart(contract.encode_records(header, records), zmq.NOBLOCK)
        except zmq.Again:
            self.dropped.update(kinds)
            if self._drop_log.ready():
                log.warning("The forwarder is not taking records (queue full): %d events and service checks "
                            "dropped so far", sum(self.dropped.values()))
        else:
            self.seq += 1
            self.sent.update(kinds)
        records.clear()

    def close(self) -> None:
        self.push.close(linger=RECEIVER_STOP.linger_ms)
