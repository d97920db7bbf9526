"""The forwarder's tap point, ``flushed``: the shards' aggregates as the forwarder fans them out to the
sinks (see :mod:`stages.common.tap`).

A flush stays encoded on its way to the sinks; only while a tap listens is it decoded once more here,
chunk by chunk, until every tap had its ``rate`` of aggregates this second. With no tap listening this
costs one non-blocking look at the tap socket per flush.
"""

from __future__ import annotations

from pathlib import Path

import zmq

from stages.common import contract
from stages.common.model import tag_tuple
from stages.common.tap import FLUSHED, listening_to, open_tap_point


class FlushTap:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: Path, process: str) -> None:
        self.point = open_tap_point(ctx, run_dir, process)

    def look(self) -> None:
        """Take in the taps' subscriptions (each one acknowledged), between flushes too."""
        listening_to(self.point)

    def show(self, frames: list[bytes]) -> None:
        """A shard's flush, as decoded frames (``pystatsd.flush.v1``): sampled to the taps listening, if any."""
        listening = listening_to(self.point)
        if not listening or self.point is None:
            return
        for chunk in contract.flush_body_chunks(frames[:3]):
            for aggregate in chunk:
                name, tags = aggregate["name"], tag_tuple(aggregate["tags"], {})
                for tap in listening:
                    if self.point.allowance(tap) and tap.spec.wants(name, tags):
                        self.point.publish(tap, {"where": FLUSHED, **aggregate})
            if not any(self.point.allowance(tap) for tap in listening):
                return

    def close(self) -> None:
        if self.point is not None:
            self.point.close()
