"""A stage's pause: while it stops for a restart, what sends to it holds its messages instead.

ZeroMQ loses what is in flight on a connection (the kernel's buffers, the sender's engine) when the
bound end closes it. So a stage restarting does not unbind while messages may still be on the way.

A shard first writes ``pause-shard-K-of-N.json`` in the run directory. Every receiver looks at the pause
files of its ring at least every :data:`stages.rundir.ring.CHECK_EVERY_SECS` and before each batch it sends; on seeing
one it sends that shard one last, empty batch marked ``paused`` (:class:`stages.common.contract.BatchHeader`)
and holds every later batch for it. The shard merges batches as usual until each receiver it heard
from lately has sent its ``paused`` batch, which comes after all its others on the same connection:
nothing is in flight then, and the shard unbinds, hands its intervals on and removes the file. The
receivers then send what they held: ZeroMQ queues it until the next instance binds, and it lands in
the interval it was read in.

The forwarder does the same with ``pause-forwarder.json``: every shard of the ring looks at it as
often, sends one empty flush marked ``paused`` (:class:`stages.common.contract.FlushHeader`) after the
flushes it already had, and holds later flushes in its hold queue. Once every shard's ``paused``
flush came the forwarder unbinds; its next instance removes the file once it has bound, and the
shards send what they held.

A pause ends too when its ``until`` passes (a stage killed while stopping leaves its file behind),
and the next instance of the stage removes a file it finds at start.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from stages.rundir.private_file import read_private, write_private
from stages.rundir.ring import CHECK_EVERY_SECS  # the receivers look at the pause files as often as at the ring file


def pause_path(run_dir: Path, shard: int, shards: int) -> Path:
    """Per ring, as the shard's socket: shard K of another count is another shard."""
    return run_dir / f"pause-shard-{shard}-of-{shards}.json"


def forwarder_pause_path(run_dir: Path) -> Path:
    """The forwarder's: the shards hold their flushes while it is there (see the module docstring)."""
    return run_dir / "pause-forwarder.json"


def begin_pause(path: Path, hold_secs: float) -> None:
    """Ask the senders to hold what they send the pausing stage for at most ``hold_secs``; OSError if it
    cannot be written."""
    write_private(path, json.dumps({"until": time.time() + hold_secs}).encode())


def end_pause(path: Path) -> None:
    path.unlink(missing_ok=True)


def read_pause(path: Path) -> float | None:
    """Until when (unix time) the pause at ``path`` holds, or None (no file, or not one pystatsd wrote)."""
    try:
        return float(json.loads(read_private(path))["until"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class PauseWatch:
    """A sender's view of the pause files of what it sends to, looked at no more than every
    CHECK_EVERY_SECS: a receiver's of its ring's shards, a shard's of the forwarder."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.next_check = 0.0
        self.paused: frozenset[int] = frozenset()

    @classmethod
    def of_ring(cls, run_dir: Path, shards: int) -> PauseWatch:
        return cls([pause_path(run_dir, shard, shards) for shard in range(shards)])

    def current(self, now: float) -> frozenset[int]:
        """The indexes in ``paths`` (a ring's shard numbers) paused at ``now``."""
        if now >= self.next_check:
            self.next_check = now + CHECK_EVERY_SECS
            paused = set()
            for index, path in enumerate(self.paths):
                until = read_pause(path)
                if until is not None and now < until:
                    paused.add(index)
            self.paused = frozenset(paused)
        return self.paused
