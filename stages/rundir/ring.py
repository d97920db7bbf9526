"""The shard ring a running instance uses, and from when: the one thing ``pystatsd reshard`` changes live.

``ring.json`` in the run directory says ``{"shards": N, "from": T, "previous": M}``: batches read from
the unix time ``T`` on (an interval edge) go to the ring of ``N`` shards, which replaced a ring of ``M``
(whose gauges its shards wait for before they close their first interval: stages.aggregator.gauge_carry;
a file without ``previous``, of an older release, makes them wait for none). Without the file the ring is the
command line's ``--shards``. Every receiver looks at it at least every tenth of a second and
switches at ``T``, between two windows, so no interval is split between two rings; a shard of
another ring than the file's is retired: at its stop it flushes what it holds instead of handing
it on; the forwarder counts the shards it waits for from it; ``pystatsd run`` starts its count.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

from stages.rundir.private_file import read_private, write_private

RING_FILE = "ring.json"
#: How often at most a receiver looks at the file: ``pystatsd reshard`` writes it well ahead of T.
CHECK_EVERY_SECS = 0.1


class Ring(NamedTuple):
    shards: int
    #: unix time from which it applies (an interval edge)
    since: float
    #: the shard count of the ring it replaced, where the file says it
    previous: int | None = None


def read_ring(run_dir: Path) -> Ring | None:
    """The ring the run directory's file says, or None (no file, or not one pystatsd wrote)."""
    try:
        data = json.loads(read_private(run_dir / RING_FILE))
        previous = data.get("previous")
        return Ring(int(data["shards"]), float(data["from"]), None if previous is None else int(previous))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_ring(run_dir: Path, ring: Ring) -> None:
    """Atomically: a receiver reads the old ring or the new one, never half of one."""
    fields: dict[str, float] = {"shards": ring.shards, "from": ring.since}
    if ring.previous is not None:
        fields["previous"] = ring.previous
    write_private(run_dir / RING_FILE, json.dumps(fields).encode())


def ring_shards(run_dir: Path, default: int, now: float | None = None) -> int:
    """The shard count in force at ``now``: the file's once its time has come, else ``default``."""
    ring = read_ring(run_dir)
    if ring is None or ring.since > (time.time() if now is None else now):
        return default
    return ring.shards


class RingWatch:
    """A receiver's view of the file, looked at no more than every CHECK_EVERY_SECS."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.next_check = 0.0
        self.ring = read_ring(run_dir)

    def current(self, now: float) -> Ring | None:
        if now >= self.next_check:
            self.next_check = now + CHECK_EVERY_SECS
            self.ring = read_ring(self.run_dir)
        return self.ring
