"""A shard's pause: while it stops for a restart, the receivers hold its batches instead of sending them.

ZeroMQ loses what is in flight on a connection (the kernel's buffers, the sender's engine) when the
bound end closes it. So a shard restarting does not unbind while batches may still be on the way:
it first writes ``pause-shard-K-of-N.json`` in the run directory. Every receiver looks at the pause
files of its ring at least every :data:`stages.ring.CHECK_EVERY_SECS` and before each batch it sends; on seeing
one it sends that shard one last, empty batch marked ``paused`` (:class:`stages.contract.BatchHeader`)
and holds every later batch for it. The shard merges batches as usual until each receiver it heard
from lately has sent its ``paused`` batch, which comes after all its others on the same connection:
nothing is in flight then, and the shard unbinds, hands its intervals on and removes the file. The
receivers then send what they held: ZeroMQ queues it until the next instance binds, and it lands in
the interval it was read in.

A pause ends too when its ``until`` passes (a shard killed while stopping leaves its file behind),
and the next instance of the shard removes a file it finds at start.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from stages.private_file import read_private, write_private
from stages.ring import CHECK_EVERY_SECS  # the receivers look at the pause files as often as at the ring file


def pause_path(run_dir: Path, shard: int, shards: int) -> Path:
    """Per ring, as the shard's socket: shard K of another count is another shard."""
    return run_dir / f"pause-shard-{shard}-of-{shards}.json"


def begin_pause(run_dir: Path, shard: int, shards: int, hold_secs: float) -> None:
    """Ask the receivers to hold shard K's batches for at most ``hold_secs``; OSError if it cannot be written."""
    write_private(pause_path(run_dir, shard, shards), json.dumps({"until": time.time() + hold_secs}).encode())


def end_pause(run_dir: Path, shard: int, shards: int) -> None:
    pause_path(run_dir, shard, shards).unlink(missing_ok=True)


def read_pause(path: Path) -> float | None:
    """Until when (unix time) the pause at ``path`` holds, or None (no file, or not one pystatsd wrote)."""
    try:
        return float(json.loads(read_private(path))["until"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class PauseWatch:
    """A receiver's view of one ring's pause files, looked at no more than every CHECK_EVERY_SECS."""

    def __init__(self, run_dir: Path, shards: int) -> None:
        self.paths = [pause_path(run_dir, shard, shards) for shard in range(shards)]
        self.next_check = 0.0
        self.paused: frozenset[int] = frozenset()

    def current(self, now: float) -> frozenset[int]:
        """The shards paused at ``now``."""
        if now >= self.next_check:
            self.next_check = now + CHECK_EVERY_SECS
            paused = set()
            for shard, path in enumerate(self.paths):
                until = read_pause(path)
                if until is not None and now < until:
                    paused.add(shard)
            self.paused = frozenset(paused)
        return self.paused
