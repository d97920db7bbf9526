"""Each sink behind its own bounded queue and thread, so a slow or dead sink holds up no other.

The queue holds whole flushes; when it is full the oldest is dropped and counted. A write that
raises a retriable :class:`SinkError` is retried with backoff (0.5 s doubling to 5 s) until it
succeeds or the sink is stopped; any other failure drops that flush, counted and logged.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from stages.forwarder.sinks.base import Flush, Sink, SinkError

log = logging.getLogger(__name__)

RETRY_FIRST_SECS = 0.5
RETRY_MAX_SECS = 5.0
#: How often at most one sink's repeated failure is logged.
ERROR_LOG_EVERY_SECS = 60.0


class SinkRunner:
    def __init__(self, sink: Sink, max_flushes: int) -> None:
        self.sink = sink
        self.name = sink.name
        self.max_flushes = max_flushes
        self.queue: collections.deque[Flush] = collections.deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.deadline = float("inf")
        self.delivered = 0
        #: reason → aggregates dropped
        self.dropped: collections.Counter[str] = collections.Counter()
        self.errors = 0
        self._last_error_log = -ERROR_LOG_EVERY_SECS
        self.thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, flush: Flush) -> None:
        """Queue a flush; never blocks (a full queue loses its oldest flush, counted)."""
        with self.cond:
            if len(self.queue) >= self.max_flushes:
                oldest = self.queue.popleft()
                self.dropped["queue_full"] += len(oldest.aggregates)
                log.warning("Sink %s is behind and its queue is full: dropped %d aggregates (%d so far)",
                            self.name, len(oldest.aggregates), self.dropped["queue_full"])
            self.queue.append(flush)
            self.cond.notify()

    def pending(self) -> int:
        with self.cond:
            return sum(len(f.aggregates) for f in self.queue)

    def request_stop(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline`` (monotonic), then stop."""
        with self.cond:
            self.stopping = True
            self.deadline = deadline
            self.cond.notify()

    def finish(self, deadline: float) -> None:
        """Wait for the thread, count what it could not deliver, close the sink."""
        self.thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        left = self.pending()
        if left:
            self.dropped["shutdown"] += left
            log.error("Sink %s: %d aggregates not delivered before the stop deadline", self.name, left)
        try:
            self.sink.close()
        except Exception:  # noqa: BLE001 - a sink's close must not stop the others from closing
            log.exception("Sink %s failed to close", self.name)

    def _next(self) -> Flush | None:
        with self.cond:
            while not self.queue and not self.stopping:
                self.cond.wait()
            return self.queue[0] if self.queue else None

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
                if not exc.retriable:
                    self._drop_head("rejected", exc)
                    continue
                self._log_error("will retry", exc)
                self._wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX_SECS)
                continue
            except Exception as exc:  # noqa: BLE001 - one broken sink must never kill the forwarder
                self.errors += 1
                log.exception("Sink %s failed unexpectedly", self.name)
                self._drop_head("error", exc)
                continue
            backoff = RETRY_FIRST_SECS
            with self.cond:
                self.queue.popleft()
            self.delivered += len(flush.aggregates)

    def _drop_head(self, reason: str, exc: Exception) -> None:
        with self.cond:
            flush = self.queue.popleft()
        self.dropped[reason] += len(flush.aggregates)
        log.error("Sink %s dropped a flush of %d aggregates: %s", self.name, len(flush.aggregates), exc)

    def _log_error(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_EVERY_SECS:
            self._last_error_log = now
            log.error("Sink %s cannot deliver (%s; %s); %d aggregates waiting", self.name, exc, what, self.pending())


class Fanout:
    """Hands every flush to every sink's runner."""

    def __init__(self, sinks: list[Sink], max_flushes: int) -> None:
        self.runners = [SinkRunner(sink, max_flushes) for sink in sinks]

    def start(self) -> None:
        for runner in self.runners:
            runner.start()

    def put(self, flush: Flush) -> None:
        for runner in self.runners:
            runner.put(flush)

    def stop(self, timeout_secs: float) -> None:
        deadline = time.monotonic() + timeout_secs
        for runner in self.runners:
            runner.request_stop(deadline)
        for runner in self.runners:
            runner.finish(deadline)
