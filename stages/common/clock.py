"""The time a loop reads: the system's in a stage process, one the test moves in a test.

A loop takes a :class:`Clock` (``SYSTEM_CLOCK`` unless told otherwise) and reads the time only
through it, so a test builds the loop with its sockets and a temporary run directory, moves the
clock across an interval edge and calls the loop's steps, instead of starting supervisord and
waiting for the wall clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Unix time: what intervals and their edges are counted in."""

    def monotonic(self) -> float:
        """A time that only moves forward: what durations and deadlines are counted in."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()
