"""What one sink delivered, dropped (by reason) and failed: the totals its row and self-metrics show.

One object per sink for the life of the forwarder, shared by the runners a reload puts in each
other's place (the old instance of a changed sink and its successor; a removed sink and one added
again under its name later), so that a sink's totals never go back and a self-metric's increase is
never negative. Counted from the runners' threads and the forwarder's loop at once, hence the lock.
"""

from __future__ import annotations

import collections
import threading


class SinkCounts:
    def __init__(self) -> None:
        self.delivered = 0
        self.errors = 0
        #: reason → aggregates dropped
        self.dropped: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add_delivered(self, aggregates: int) -> None:
        with self._lock:
            self.delivered += aggregates

    def add_error(self) -> None:
        with self._lock:
            self.errors += 1

    def add_dropped(self, reason: str, aggregates: int) -> None:
        with self._lock:
            self.dropped[reason] += aggregates
