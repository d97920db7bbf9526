"""Each sink behind its own bounded queue and thread, so a slow or dead sink holds up no other.

The queue holds whole flushes, bounded by the sink's ``buffer_max_aggregates`` and
``buffer_max_bytes``; past either, the oldest queued flushes are dropped and counted. A write that
raises a retriable :class:`SinkError` is retried with backoff (0.5 s doubling to 5 s) until it
succeeds or the stop deadline passes; any other failure drops that flush, counted and logged.

Every sink is known by its name under ``forwarders:`` (several of one kind are several names), and a
reload matches the sinks by name. A reload (:meth:`Fanout.reconfigure`) loses nothing uncounted. A
changed sink's old runner stops after the write it is in; its successor, before anything of its own,
takes what the old one holds (the flush it was retrying first, then its queue) and delivers it with
the new settings. A removed sink keeps delivering for the drain a stop gives, on its own thread; what
is left then is counted as dropped, reason ``removed``, and its row stays in the figures.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from stages.common.contract import DecodeError
from stages.common.figure_schemas import SinkFigures
from stages.common.log_throttle import LogThrottle
from stages.forwarder.sink_counts import SinkCounts
from stages.forwarder.sinks.base import BufferConfig, Flush, NamedSink, Sink, SinkConfig, SinkError

log = logging.getLogger(__name__)

RETRY_FIRST_SECS = 0.5
RETRY_MAX_SECS = 5.0


class SinkRunner:
    def __init__(self, sink: Sink, bounds: BufferConfig, counts: SinkCounts | None = None,
                 name: str | None = None) -> None:
        self.sink = sink
        #: Its name under ``forwarders:`` (its kind's when none is given): in its row, tags and logs.
        self.name = name if name is not None else sink.name
        self.bounds = bounds
        #: Whether records (events, service checks) go to this sink: its config says it writes them.
        self.carries_records = isinstance(bounds, SinkConfig) and bounds.carries_records
        self.queue: collections.deque[Flush] = collections.deque()
        #: The flush being written, out of the queue so that dropping the oldest never touches it.
        self.current: Flush | None = None
        self.queued_aggregates = 0
        self.queued_bytes = 0
        self.cond = threading.Condition()
        self.stopping = False
        self.deadline = float("inf")
        #: This sink's totals; a reload's successor of it carries them on.
        self.counts = counts if counts is not None else SinkCounts()
        #: Why the flush being written failed last, while it keeps failing; None once delivering again.
        self.last_error: str | None = None
        #: A changed sink's new runner: the old one, whose last write it waits for (until
        #: ``handover_by``, monotonic) before it takes what that one holds.
        self.predecessor: SinkRunner | None = None
        self.handover_by = 0.0
        #: Taken out of the sinks by a reload (removed, or replaced by ``successor``).
        self.retired = False
        self.successor: SinkRunner | None = None
        # A changed sink's old runner is released by whichever comes second, under ``cond``: its
        # own thread's end (the write it was in is over) or its successor's taking what it holds.
        self.writes_ended = False
        self.handed_over = False
        #: What it held is counted and its sink closed: nothing more is done with it.
        self.released = False
        self._error_log = LogThrottle()
        self._drop_log = LogThrottle()
        self._drops_logged = 0
        self.thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    @property
    def delivered(self) -> int:
        return self.counts.delivered

    @property
    def errors(self) -> int:
        return self.counts.errors

    @property
    def dropped(self) -> collections.Counter[str]:
        """reason → aggregates dropped"""
        return self.counts.dropped

    def start(self) -> None:
        self.thread.start()

    def put(self, flush: Flush) -> None:
        """Queue a flush; never blocks (past the bounds the oldest queued flushes go, counted)."""
        with self.cond:
            self.queue.append(flush)
            self.queued_aggregates += flush.count
            self.queued_bytes += flush.size
            self._trim()
            self.cond.notify()
        self._log_drops()

    def _trim(self) -> None:
        """Drop the oldest queued flushes while the queue is past its bounds (with ``cond`` held)."""
        while len(self.queue) > 1 and (self.queued_aggregates > self.bounds.buffer_max_aggregates
                                       or self.queued_bytes > self.bounds.buffer_max_bytes):
            oldest = self._pop()
            self.counts.add_dropped("buffer_full", oldest.count)
            _done_with(oldest)

    def _pop(self) -> Flush:
        flush = self.queue.popleft()
        self.queued_aggregates -= flush.count
        self.queued_bytes -= flush.size
        return flush

    def _take_all(self, with_current: bool) -> list[Flush]:
        """Empty the queue (and, with ``with_current``, the flush being written): oldest first (``cond`` held)."""
        held = [self.current] if with_current and self.current is not None else []
        if with_current:
            self.current = None
        held += self.queue
        self.queue.clear()
        self.queued_aggregates = self.queued_bytes = 0
        return held

    def _log_drops(self, final: bool = False) -> None:
        """Say how many were dropped: at most once a minute, and once more at the stop."""
        dropped = self.counts.dropped["buffer_full"]
        if dropped > self._drops_logged and (self._drop_log.ready() or final):
            log.warning("Sink %s is behind and its buffer is full: dropped the oldest %d aggregates (%d in all)",
                        self.name, dropped - self._drops_logged, dropped)
            self._drops_logged = dropped

    def pending(self) -> int:
        """Aggregates queued or being written (a changed sink's: the old runner's too, until taken over)."""
        with self.cond:
            own = self.queued_aggregates + (self.current.count if self.current else 0)
        predecessor = self.predecessor
        if predecessor is not None and not predecessor.handed_over:
            own += predecessor.pending()
        return own

    def figures(self) -> SinkFigures:
        """Its row in the forwarder's figures (``pystatsd status``) and self-metrics."""
        counts = self.counts
        return {"delivered": counts.delivered, "waiting": self.pending(), "dropped": dict(counts.dropped),
                "errors": counts.errors, "failing": None if self.released else self.last_error,
                "removed": self.retired and self.successor is None}

    def request_stop(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline`` (monotonic), then stop."""
        with self.cond:
            self.stopping = True
            self.deadline = min(deadline, self.deadline)
            self.cond.notify()

    def retire(self, deadline: float, successor: SinkRunner | None = None) -> None:
        """A reload took it out: deliver until ``deadline``, then count what is left as ``removed``;
        with a ``successor`` (``deadline`` now), stop after the write it is in and leave the rest to it."""
        self.retired, self.successor = True, successor
        self.request_stop(deadline)

    def finish(self, abandon_at: float) -> None:
        """Wait for the thread until ``abandon_at`` (monotonic), count what it could not deliver, close the sink."""
        if not self.released:
            self.thread.join(max(0.0, abandon_at - time.monotonic()))
        self._release()

    def _release(self) -> None:
        """Count what it still holds as dropped (``removed`` if a reload took it out, else ``shutdown``),
        tell the ledger it is done with those flushes, and close the sink: once, from whichever thread."""
        with self.cond:
            if self.released:
                return
            self.released = True
            left = self._take_all(with_current=True)
        aggregates = sum(flush.count for flush in left)
        for flush in left:
            _done_with(flush)
        if aggregates and self.retired:
            self.counts.add_dropped("removed", aggregates)
            log.error("Sink %s, %s by a reload, did not deliver %d aggregates within its drain: counted as "
                      "dropped (reason removed)", self.name, "removed" if self.successor is None else "replaced",
                      aggregates)
        elif aggregates:
            self.counts.add_dropped("shutdown", aggregates)
            log.error("Sink %s: %d aggregates not delivered before the stop deadline", self.name, aggregates)
        elif self.retired and self.successor is None:
            log.info("Sink %s, removed by a reload, delivered all it held", self.name)
        try:
            self.sink.close()
        except Exception:  # a sink's close must not stop the others from closing
            log.exception("Sink %s failed to close", self.name)
        self._log_drops(final=True)

    def hand_over(self) -> tuple[list[Flush], bool]:
        """What this replaced runner holds, for its successor, oldest first (the flush it was writing
        too, once its thread is done with it); and whether the successor should now release it."""
        with self.cond:
            if self.released:
                return [], False
            self.handed_over = True
            return self._take_all(with_current=self.writes_ended), self.writes_ended

    def _take_over(self, predecessor: SinkRunner) -> None:
        """Before its first write: wait for the old runner's last write (bounded), then put what it held
        before anything queued here, as the next to deliver."""
        predecessor.thread.join(max(0.0, self.handover_by - time.monotonic()))
        held, release = predecessor.hand_over()
        with self.cond:
            self.queue.extendleft(reversed(held))
            self.queued_aggregates += sum(flush.count for flush in held)
            self.queued_bytes += sum(flush.size for flush in held)
            self._trim()
        self._log_drops()
        if held:
            log.info("Sink %s: delivering first, with the reloaded settings, the %d aggregates its previous "
                     "settings had not delivered", self.name, sum(flush.count for flush in held))
        if release:
            predecessor._release()

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
        if self.predecessor is not None:
            self._take_over(self.predecessor)
        self._deliver()
        if self.retired:
            # A removed sink's drain is over; a replaced one's successor may have taken its queue already.
            with self.cond:
                self.writes_ended = True
                release = self.successor is None or self.handed_over
            if release:
                self._release()

    def _deliver(self) -> None:
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
                refused = self.sink.write(flush) or 0
            except DecodeError as exc:  # decoded as it is written: only a broken sender on the ipc socket sends one
                self.counts.add_error()
                self._drop_current("rejected", exc)
                continue
            except SinkError as exc:
                self.counts.add_error()
                self.last_error = str(exc)
                if not exc.retriable:
                    self._drop_current("rejected", exc)
                    continue
                self._log_error(exc)
                self._wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX_SECS)
                continue
            except Exception as exc:  # one broken sink must never kill the forwarder
                self.counts.add_error()
                log.exception("Sink %s failed unexpectedly", self.name)
                self._drop_current("error", exc)
                continue
            backoff = RETRY_FIRST_SECS
            self.last_error = None
            with self.cond:
                # Not ours any more if a stop abandoned this write and counted the flush already.
                ours = self.current is flush
                self.current = None
            if ours:
                refused = min(max(refused, 0), flush.count)
                self.counts.add_delivered(flush.count - refused)
                if refused:
                    self.counts.add_dropped("rejected", refused)
                    log.error("Sink %s: the destination refused %d of a flush's %d aggregates", self.name, refused,
                              flush.count)
                _done_with(flush)

    def _drop_current(self, reason: str, exc: Exception) -> None:
        with self.cond:
            flush, self.current = self.current, None
        if flush is None:  # a stop abandoned this write and counted the flush already
            return
        self.counts.add_dropped(reason, flush.count)
        _done_with(flush)
        log.error("Sink %s dropped a flush of %d aggregates: %s", self.name, flush.count, exc)

    def _log_error(self, exc: Exception) -> None:
        if self._error_log.ready():
            log.error("Sink %s cannot deliver, will retry: %s (%d aggregates waiting)", self.name, exc, self.pending())


def _done_with(flush: Flush) -> None:
    if flush.completion is not None:
        flush.completion.done()


class Fanout:
    """Hands every flush to every sink's runner."""

    def __init__(self, sinks: list[NamedSink]) -> None:
        self.runners = [SinkRunner(sink, bounds, name=name) for name, sink, bounds in sinks]
        #: Runners a reload took out that are not released yet (a removed sink draining, a changed
        #: sink's old runner until its successor took what it held).
        self.retiring: list[SinkRunner] = []
        #: Sinks a reload removed, released: name → the last runner, kept for its row (its totals).
        self.removed: dict[str, SinkRunner] = {}

    def start(self) -> None:
        for runner in self.runners:
            runner.start()

    def put(self, flush: Flush) -> None:
        for runner in self.runners:
            runner.put(flush)

    def put_records(self, flush: Flush) -> bool:
        """A flush of records (events, service checks) to the sinks that carry them; False when none does."""
        carriers = [runner for runner in self.runners if runner.carries_records]
        for runner in carriers:
            runner.put(flush)
        return bool(carriers)

    def reconfigure(self, sinks: list[NamedSink], drain_secs: float) -> list[str]:
        """Take ``sinks`` as the sinks from the next flush on; what changed, in words.

        Sinks are matched by name: one renamed is one removed and another added. A sink whose kind
        and config are the same keeps its runner and all it holds. A changed sink's new runner
        delivers first what the old one holds, waiting at most ``drain_secs`` for the old one's last
        write. A removed sink delivers what it holds within ``drain_secs`` (as at a stop); the rest
        is counted as dropped, reason ``removed``. So does a sink whose name now holds another kind
        (``debug_mode``'s console stand-in for a remote sink, or back): what it held was meant for
        its own destination, and the new one starts empty, its row going on. Neither holds up a
        flush or another sink.
        """
        current = {running.name: running for running in self.runners}
        now = time.monotonic()
        runners, changes = [], []
        for name, sink, bounds in sinks:
            old = current.pop(name, None)
            if old is not None and type(old.sink) is type(sink) and old.bounds == bounds:
                runners.append(old)
                continue
            if old is not None and type(old.sink) is not type(sink):
                old.retire(now + drain_secs)
                self.retiring.append(old)
                changes.append(f"sink {name} is of another kind: the old one drains, the new one starts empty")
                old = None
            elif old is None:
                changes.append(f"sink {name} added")
            if old is None:
                runner = SinkRunner(sink, bounds, self._removed_counts(name), name=name)
            else:
                runner = SinkRunner(sink, bounds, old.counts, name=name)
                runner.predecessor, runner.handover_by = old, now + drain_secs
                old.retire(now, successor=runner)
                self.retiring.append(old)
                changes.append(f"sink {name} changed")
            runner.start()
            runners.append(runner)
        gone = list(current.values())
        changes += [f"sink {runner.name} removed" for runner in gone]
        for runner in gone:
            runner.retire(now + drain_secs)
            self.retiring.append(runner)
        self.runners = runners
        return changes

    def _removed_counts(self, name: str) -> SinkCounts | None:
        """The totals of a sink of this name that a reload removed, for one added again: its row goes on."""
        gone = self.removed.pop(name, None)
        if gone is not None:
            return gone.counts
        draining = [runner for runner in self.retiring if runner.name == name and runner.successor is None]
        return draining[-1].counts if draining else None

    def figures(self) -> dict[str, SinkFigures]:
        """Each sink's row: the running sinks', then those of sinks a reload removed (one row a name)."""
        rows: dict[str, SinkFigures] = {}
        removed = [runner for runner in self.retiring if runner.successor is None]
        for runner in [*self.runners, *removed, *self.removed.values()]:
            if runner.name not in rows:
                rows[runner.name] = runner.figures()
        return rows

    def finish_retired(self, abandon_at: float | None = None) -> None:
        """Forget the replaced runners that are released (each is, off this loop, once done); with
        ``abandon_at`` (a stop), release the others, waiting for their threads until then."""
        still = []
        for runner in self.retiring:
            if abandon_at is not None:
                runner.finish(abandon_at)
            if not runner.released:
                still.append(runner)
            elif runner.successor is None:
                self.removed[runner.name] = runner
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
