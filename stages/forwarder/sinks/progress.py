"""Resuming a flush whose write failed part way: one rule for every sink that delivers in parts.

The runner hands a failed flush back to ``write`` as the very same object, and nothing else until
it is delivered or dropped (see :mod:`stages.forwarder.sinks.base`). So the same object goes on
from its first part not yet delivered, with the parts made the first time, and another object is
a new flush: the one before was dropped, and what was kept of it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

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


#: A chunk's aggregates: the flush as :meth:`Flush.chunks` decodes it.
Chunk = list[dict[str, Any]]


class ChunkedProgress(Generic[P]):
    """The flush a sink writes a chunk of aggregates at a time (as :meth:`Flush.chunks` decodes them), and
    how far it got: each chunk is cut into parts when it is reached and let go once they are delivered,
    so a flush being written holds one chunk's parts, not the whole flush's (a Kafka record each, a
    few hundred bytes, took 900 MiB for 100,000 aggregates in the original format).

    The same flush handed back after a failure resumes at the first part not delivered, with that
    chunk's parts made the first time: the chunks before it are decoded again but not encoded (an
    encoder may add to running totals), so nothing is encoded twice or sent twice that was delivered.
    ``encode`` gets the flush, the chunk and the index in the flush of the chunk's first aggregate.
    """

    def __init__(self, encode: Callable[[Flush, Chunk, int], list[P]], size: int | None = None) -> None:
        self._encode = encode
        #: At most this many aggregates to a chunk (None: as the flush decodes them).
        self._size = size
        self._flush: Flush | None = None
        #: Chunks of the flush whose every part is delivered.
        self._chunks_done = 0
        #: The parts of the chunk being written (None: not made yet), and how many are delivered.
        self._parts: list[P] | None = None
        self._done = 0

    def resume(self, flush: Flush) -> Iterator[list[P]]:
        """Each chunk's parts not delivered yet, chunk after chunk; asking for the next chunk says that
        every part of the one before was delivered (:meth:`delivered` need not be told of the last ones)."""
        if flush is not self._flush:
            self.finish()
            self._flush = flush
        first = 0
        for index, chunk in enumerate(_cut(flush.chunks(), self._size)):
            if index >= self._chunks_done:
                if self._parts is None:
                    self._parts, self._done = self._encode(flush, chunk, first), 0
                yield self._parts[self._done:]
                self._chunks_done, self._parts, self._done = index + 1, None, 0
            first += len(chunk)

    def delivered(self, count: int) -> None:
        """``count`` more parts of the chunk being written, following those delivered before, are delivered."""
        self._done += count

    def finish(self) -> None:
        """The flush is delivered (or dropped): let it and its parts go."""
        self._flush, self._parts, self._chunks_done, self._done = None, None, 0, 0


def _cut(chunks: Iterator[Chunk], size: int | None) -> Iterator[Chunk]:
    """``chunks`` cut into chunks of at most ``size`` aggregates."""
    for chunk in chunks:
        if size is None or len(chunk) <= size:
            yield chunk
            continue
        for start in range(0, len(chunk), size):
            yield chunk[start:start + size]
