"""One rule for warnings that could repeat thousands of times a second: say it, then at most once
every so often (what happened meanwhile is in the counts the next message and the self-metrics give)."""

from __future__ import annotations

import math
import time

#: How often at most a repeated warning is logged, unless its caller has a reason for another pace.
LOG_EVERY_SECS = 60.0
#: The receiver's pace for bad input and shed batches: a user fixing a client or sizing the shards
#: watches for these as they happen.
INPUT_LOG_EVERY_SECS = 10.0


class LogThrottle:
    """``ready()`` is True the first time and then at most once every ``every_secs``."""

    def __init__(self, every_secs: float = LOG_EVERY_SECS) -> None:
        self.every_secs = every_secs
        self._last = -math.inf

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.every_secs:
            return False
        self._last = now
        return True
