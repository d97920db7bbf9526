"""Resuming a flush whose write failed part way: one rule for every sink that delivers in parts.

The runner hands a failed flush back to ``write`` as the very same object, and nothing else until
it is delivered or dropped (see :mod:`stages.forwarder.sinks.base`). So the same object goes on
from its first part not yet delivered, with the parts made the first time, and another object is
a new flush: the one before was dropped, and what was kept of it goes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from stages.forwarder.sinks.base import Flush

P = TypeVar("P")


class FlushProgress(Generic[P]):
    """The flush a sink is writing, cut into parts once, and how many parts from the first are delivered.

    A part is what the sink sends at once or keeps track of alone: a line, a Kafka record, or
    the whole payload where the destination takes a resend whole.
    """

    def __init__(self, encode: Callable[[Flush], list[P]]) -> None:
        self._encode = encode
        self._flush: Flush | None = None
        self._parts: list[P] = []
        self._done = 0

    def resume(self, flush: Flush) -> list[P]:
        """The parts of ``flush`` not delivered yet; all of them, encoded now, if it is a new flush."""
        if flush is not self._flush:
            # The dropped flush's parts go before the new one's are made, not beside them.
            self.finish()
            self._parts = self._encode(flush)
            self._flush = flush
        return self._parts[self._done:]

    def delivered(self, count: int) -> None:
        """``count`` more parts, following those delivered before, are delivered."""
        self._done += count

    def finish(self) -> None:
        """The flush is delivered: let it and its parts go, so that they hold no memory until the next."""
        self._flush, self._parts, self._done = None, [], 0
