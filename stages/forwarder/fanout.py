"""Each sink behind its own bounded queue and thread, so a slow or dead sink holds up no other.

The queue holds whole flushes, bounded by the sink's ``buffer_max_aggregates`` and
``buffer_max_bytes``; past either, the oldest queued flushes are dropped and counted. A write that
raises a retriable :class:`SinkError` is retried with backoff (0.5 s doubling to 5 s) until it
succeeds or the stop deadline passes; any other failure drops that flush, counted and logged.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from stages.forwarder.sinks.base import BufferConfig, Flush, Sink, SinkError
from stages.log_throttle import LogThrottle

log = logging.getLogger(__name__)

RETRY_FIRST_SECS = 0.5
RETRY_MAX_SECS = 5.0


class SinkRunner:
    def __init__(self, sink: Sink, bounds: BufferConfig) -> None:
        self.sink = sink
        self.name = sink.name
        self.bounds = bounds
        self.queue: collections.deque[Flush] = collections.deque()
        #: The flush being written, out of the queue so that dropping the oldest never touches it.
        self.current: Flush | None = None
        self.queued_aggregates = 0
        self.queued_bytes = 0
        self.cond = threading.Condition()
        self.stopping = False
        self.deadline = float("inf")
        self.delivered = 0
        #: reason → aggregates dropped
        self.dropped: collections.Counter[str] = collections.Counter()
        self.errors = 0
        #: Why the flush being written failed last, while it keeps failing; None once delivering again.
        self.last_error: str | None = None
        self._error_log = LogThrottle()
        self._drop_log = LogThrottle()
        self._drops_logged = 0
        self.thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, flush: Flush) -> None:
        """Queue a flush; never blocks (past the bounds the oldest queued flushes go, counted)."""
        with self.cond:
            self.queue.append(flush)
            self.queued_aggregates += len(flush.aggregates)
            self.queued_bytes += flush.size
            while len(self.queue) > 1 and (self.queued_aggregates > self.bounds.buffer_max_aggregates
                                           or self.queued_bytes > self.bounds.buffer_max_bytes):
                oldest = self._pop()
                self.dropped["buffer_full"] += len(oldest.aggregates)
                _done_with(oldest)
            self.cond.notify()
        self._log_drops()

    def _pop(self) -> Flush:
        flush = self.queue.popleft()
        self.queued_aggregates -= len(flush.aggregates)
        self.queued_bytes -= flush.size
        return flush

    def _log_drops(self, final: bool = False) -> None:
        """Say how many were dropped: at most once a minute, and once more at the stop."""
        dropped = self.dropped["buffer_full"]
        if dropped > self._drops_logged and (self._drop_log.ready() or final):
            log.warning("Sink %s is behind and its buffer is full: dropped the oldest %d aggregates (%d in all)",
                        self.name, dropped - self._drops_logged, dropped)
            self._drops_logged = dropped

    def pending(self) -> int:
        """Aggregates queued or being written."""
        with self.cond:
            return self.queued_aggregates + (len(self.current.aggregates) if self.current else 0)

    def request_stop(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline`` (monotonic), then stop."""
        with self.cond:
            self.stopping = True
            self.deadline = deadline
            self.cond.notify()

    def finish(self, abandon_at: float) -> None:
        """Wait for the thread until ``abandon_at`` (monotonic), count what it could not deliver, close the sink."""
        self.thread.join(max(0.0, abandon_at - time.monotonic()))
        left = self.pending()
        with self.cond:
            abandoned = [*self.queue, *([self.current] if self.current else [])]
        for flush in abandoned:
            _done_with(flush)
        if left:
            self.dropped["shutdown"] += left
            log.error("Sink %s: %d aggregates not delivered before the stop deadline", self.name, left)
        try:
            self.sink.close()
        except Exception:  # noqa: BLE001 - a sink's close must not stop the others from closing
            log.exception("Sink %s failed to close", self.name)
        self._log_drops(final=True)

    def _next(self) -> Flush | None:
        with self.cond:
            if self.current is None:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.queue:
                    self.current = self._pop()
            return self.current

    def _wait(self, secs: float) -> None:
        with self.cond:
            self.cond.wait(min(secs, max(0.0, self.deadline - time.monotonic())))

    def _run(self) -> None:
        backoff = RETRY_FIRST_SECS
        opened = False
        while True:
            flush = self._next()
            if flush is None or time.monotonic() >= self.deadline:
                return
            try:
                if not opened:
                    self.sink.open()
                    opened = True
                self.sink.write(flush)
            except SinkError as exc:
                self.errors += 1
                self.last_error = str(exc)
                if not exc.retriable:
                    self._drop_current("rejected", exc)
                    continue
                self._log_error(exc)
                self._wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX_SECS)
                continue
            except Exception as exc:  # noqa: BLE001 - one broken sink must never kill the forwarder
                self.errors += 1
                log.exception("Sink %s failed unexpectedly", self.name)
                self._drop_current("error", exc)
                continue
            backoff = RETRY_FIRST_SECS
            self.last_error = None
            with self.cond:
                self.current = None
            self.delivered += len(flush.aggregates)
            _done_with(flush)

    def _drop_current(self, reason: str, exc: Exception) -> None:
        with self.cond:
            flush, self.current = self.current, None
        assert flush is not None
        self.dropped[reason] += len(flush.aggregates)
        _done_with(flush)
        log.error("Sink %s dropped a flush of %d aggregates: %s", self.name, len(flush.aggregates), exc)

    def _log_error(self, exc: Exception) -> None:
        if self._error_log.ready():
            log.error("Sink %s cannot deliver, will retry: %s (%d aggregates waiting)", self.name, exc, self.pending())


def _done_with(flush: Flush) -> None:
    if flush.completion is not None:
        flush.completion.done()


class Fanout:
    """Hands every flush to every sink's runner."""

    def __init__(self, sinks: list[tuple[Sink, BufferConfig]]) -> None:
        self.runners = [SinkRunner(sink, bounds) for sink, bounds in sinks]
        #: Runners a reload replaced, delivering what they still held; each with its deadline.
        self.retiring: list[tuple[SinkRunner, float]] = []

    def start(self) -> None:
        for runner in self.runners:
            runner.start()

    def put(self, flush: Flush) -> None:
        for runner in self.runners:
            runner.put(flush)

    def reconfigure(self, sinks: list[tuple[Sink, BufferConfig]], drain_secs: float) -> list[str]:
        """Take ``sinks`` as the sinks from the next flush on; what changed, in words.

        A sink whose config is the same keeps its runner and all it holds. A removed sink, and the
        old instance of a changed one, delivers what it holds (within ``drain_secs``, as at a stop)
        and then closes, while the new instance already takes the flushes that follow.
        """
        # By name, in order: debug_mode makes a console stand-in of every remote sink, all named console.
        current: dict[str, list[SinkRunner]] = {}
        for running in self.runners:
            current.setdefault(running.name, []).append(running)
        runners, retired, changes = [], [], []
        for sink, bounds in sinks:
            same_name = current.get(sink.name)
            old = same_name.pop(0) if same_name else None
            if old is not None and type(old.sink) is type(sink) and old.bounds == bounds:
                runners.append(old)
                continue
            if old is not None:
                retired.append(old)
            changes.append(f"sink {sink.name} {'changed' if old is not None else 'added'}")
            runner = SinkRunner(sink, bounds)
            runner.start()
            runners.append(runner)
        gone = [runner for left in current.values() for runner in left]
        changes += [f"sink {runner.name} removed" for runner in gone]
        retired += gone
        self.runners = runners
        deadline = time.monotonic() + drain_secs
        for runner in retired:
            runner.request_stop(deadline)
            self.retiring.append((runner, deadline))
        return changes

    def finish_retired(self, abandon_at: float | None = None) -> None:
        """Close the replaced runners that are done; with ``abandon_at``, all of them, waiting until then."""
        still = []
        for runner, deadline in self.retiring:
            if abandon_at is not None or not runner.thread.is_alive():
                runner.finish(time.monotonic() if abandon_at is None else abandon_at)
            else:
                still.append((runner, deadline))
        self.retiring = still

    def stop(self, timeout_secs: float, abandon_after_secs: float) -> None:
        """Let every sink deliver for ``timeout_secs``; a thread still stuck in a write ``abandon_after_secs``
        later is left behind (one shared deadline, however many sinks are stuck)."""
        deadline = time.monotonic() + timeout_secs
        for runner in self.runners:
            runner.request_stop(deadline)
        abandon_at = deadline + abandon_after_secs
        for runner in self.runners:
            runner.finish(abandon_at)
        self.finish_retired(abandon_at)
