"""A clock the test moves (stages.common.clock.Clock): both its times advance together, by hand."""

from __future__ import annotations


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.mono = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, secs: float) -> None:
        self.now += secs
        self.mono += secs

    def to(self, unix_time: float) -> None:
        """Move forward to ``unix_time`` (never back: a monotonic clock cannot)."""
        if unix_time < self.now:
            raise ValueError(f"the clock moves forward only: {unix_time} < {self.now}")
        self.advance(unix_time - self.now)
