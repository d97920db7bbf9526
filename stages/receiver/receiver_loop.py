"""Receiver: ``python -m stages.receiver --shards N``.

Reads UDP on ``bind_address:bind_port`` and every ``listeners`` entry (udp, tcp, unixgram, unix; see
:mod:`stages.receiver.listeners`); parses each datagram or each run of complete lines from a stream
(JSON or statsd lines, detected per payload) into its batch window (see :mod:`.batcher`).
Several receivers can run side by side (``--extra-receivers``, ``--index``): they share the UDP and
TCP ports through ``SO_REUSEPORT`` and the first alone serves Unix sockets. Connects one PUSH per
shard to ``ipc://<run>/shard-K-of-N.sock`` (the ring of ``ring.json`` after a reshard) and sends
``pystatsd.batch.v2`` without ever blocking.
Every interval it adds its own counters (datagrams, metrics, bad lines by reason, metrics dropped
per shard or by a rule, datagrams the kernel dropped on its sockets) to the stream as
``<self_metrics_prefix>receiver.*`` counters (see :mod:`stages.common.selfstats`).
On SIGTERM: reads what the kernel already holds, sends every open batch, exits 0. On SIGHUP
(``pystatsd restart receiver``, ``pystatsd reload``): restarts in place with its sockets open
(:mod:`.handover`). What it holds unsent is kept in a memory-mapped file of the run directory, so that
after a ``kill -9`` its successor has the forwarder's ledger count it (:mod:`.unsent`).
"""

from __future__ import annotations

import logging
import math
import os
import select
import time
from pathlib import Path
from typing import Any

import zmq

from stages.common.clock import SYSTEM_CLOCK, Clock
from stages.common.config import Config
from stages.common.figure_schemas import ReceiverFigures
from stages.common.intervals import next_edge
from stages.common.lifecycle import (
    RECEIVER_STOP,
    StopSignal,
    reloaded,
    reread_config,
)
from stages.common.log_throttle import INPUT_LOG_EVERY_SECS, LogThrottle
from stages.common.model import tag_tuple
from stages.common.selfstats import SelfStats
from stages.common.sharding import shard_endpoint
from stages.receiver.batcher import Batcher
from stages.receiver.capture_tap import IDLE_WAKE_SECS, CaptureTap
from stages.receiver.handover import close_held, hand_over, running_config, take_over
from stages.receiver.listeners import adopt_listener, open_listener, shares_port
from stages.receiver.listeners.connections import StreamConnections
from stages.receiver.parsers import payload_parser, statsd_lines
from stages.receiver.parsers.base import LineOptions, OpenInterval
from stages.receiver.records_out import RecordsOut
from stages.receiver.relay import open_relay
from stages.receiver.rules.kind import RulesError
from stages.receiver.rules.rule_set import MAPPED, RuleSet, load_rule_set
from stages.receiver.tap_view import ReceiverTap
from stages.receiver.unsent import Predecessor, read_predecessor, unsent_path
from stages.receiver.window import Window, new_window, take_payloads
from stages.rundir.figures import publish
from stages.rundir.pause import PauseWatch
from stages.rundir.ring import RingWatch, ring_shards

log = logging.getLogger("stages.receiver")

#: Datagrams read from one socket per wake-up before the loop looks at its timers again.
READ_BURST = 256
#: A wake-up that found fewer datagrams than this was a trickle: the receiver then pauses for
#: COALESCE_SECS so the kernel gathers a burst, instead of paying a wake-up per datagram or two. At
#: most a few hundred datagrams arrive meanwhile, far less than a receive buffer holds.
COALESCE_BELOW = 128
COALESCE_SECS = 0.001


class Receiver:
    def __init__(self, config: Config, shards: int, ctx: zmq.Context[zmq.Socket[bytes]],
                 run: os.PathLike[str] | str, name: str, extra_receivers: int = 0, index: int = 0,
                 config_file: Path | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        #: What a restart in place reads; it is checked first, so that a bad edit cannot stop the receiver.
        self.config_file = config_file
        self.defaults = config.agent.tags
        self.listeners: list[Any] = []
        urls = config.listener_urls()
        if index > 0:
            # Receivers beyond the first share its UDP and TCP ports; a Unix socket path has one owner.
            urls = [url for url in urls if shares_port(url)]
        handed = take_over()
        if handed:
            # A reload restarts the receiver in place: what only a pipeline restart applies stays as it runs.
            config = reloaded(running_config(config, handed), config, log)
            self.config = config
        held: dict[str, Any] = handed["listeners"] if handed else {}
        opened_anew = 0
        self.streams = StreamConnections(config.tcp_idle_timeout, config.tcp_max_connections_per_peer)
        try:
            for url in urls:
                if url in held:
                    self.listeners.append(adopt_listener(url, held.pop(url), config.receive_buffer_bytes,
                                                         self.streams))
                else:
                    self.listeners.append(open_listener(url, config.receive_buffer_bytes, config.socket_mode(),
                                                        self.streams, reuse_port=extra_receivers > 0))
                    opened_anew += 1
        except OSError:
            for listener in self.listeners:
                listener.close()
            raise
        for url, gone in held.items():
            close_held(gone)
            log.info("Closed %s: the config no longer lists it", url)
        self.ctx = ctx
        self.run_dir = Path(run)
        self.ring = RingWatch(self.run_dir)
        # After a reshard the ring file, not the command line, says how many shards there are.
        self.shards = ring_shards(self.run_dir, shards, clock.time())
        #: The interval the window fills, which a stamped metric must be stamped in; moved on per payload.
        self.open_interval = OpenInterval(config.flush_interval, clock.time())
        #: Events and service checks the parsers read since the last payloads were taken in.
        self.records: list[dict[str, Any]] = []
        self.line_options = LineOptions(self.open_interval, config.keep_container_id, self.records)
        self.records_out = RecordsOut(ctx, self.run_dir, name, config.queues.forwarder_flushes)
        #: What it reads, to `pystatsd capture` while one asks (stages.receiver.capture_tap); asked before
        #: the first read, so a capture goes on across a restart in place without a gap.
        self.capture = CaptureTap(ctx, self.run_dir, name)
        self.capture.follow(clock.time(), self.listeners)
        self.parse_payload = payload_parser(self.defaults, self.line_options)
        #: None without ``relay:``; its names resolved here, so a reload (a restart in place) resolves anew.
        self.relay = open_relay(config.relay, config.relay_max_datagram_bytes, clock.time())
        #: None without rules: the windows then ask nothing and look nothing up (stages.receiver.identity).
        self.rules = load_rule_set(config, rules_dir(config_file))
        if self.rules is not None:
            log.info("Applying %d rules before sharding", self.rules.rule_count)
        #: pystatsd tap's view of what this receiver parses and maps: nothing while no tap listens.
        self.tap = ReceiverTap(ctx, self.run_dir, name, self.defaults, self.line_options, self.rules)
        #: What the rules dropped, and each tally counted, in the windows a reshard replaced (the open
        #: window counts its own).
        self.rule_dropped_before = 0
        self.tallies_before: list[int] = []
        pushes = self.connect_shards(self.shards)
        unsent = unsent_path(self.run_dir, name)
        predecessor = read_predecessor(unsent)
        self.batcher = Batcher(pushes, name, self.new_window(self.shards),
                               config.batch_max_entries, config.batch_max_age_ms / 1000, config.flush_interval,
                               PauseWatch.of_ring(self.run_dir, self.shards), config.queues.shard_batches, unsent,
                               clock)
        if predecessor is not None:
            self.end_predecessor(predecessor)
        self.name = name
        self.datagrams = 0
        self.metrics = 0
        self.bad: dict[str, int] = {}
        self.stats = SelfStats(config.self_metrics_prefix, "receiver", {"receiver": name}, self.defaults)
        self._bad_logged = 0
        self._bad_log = LogThrottle(INPUT_LOG_EVERY_SECS)
        self.next_report = self._report_time(clock.time())
        if handed:
            # The kernel's drop counters belong to the sockets, which lived on: count on from them.
            self.stats.total("kernel_drops", handed["kernel_drops"])
            self.stats.take()
            log.info("Restarted in place: took over %d listeners", len(self.listeners) - opened_anew)
        #: True once the loop ended for a restart in place (SIGHUP), not a stop.
        self.restarting = False
        # At once, not at the first report: `pystatsd restart` waits for this image's figures.
        self.publish_figures(self.kernel_drops())

    def connect_shards(self, shards: int) -> list[zmq.Socket[bytes]]:
        pushes = []
        for shard in range(shards):
            push = self.ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, self.config.queues.shard_batches)
            push.connect(shard_endpoint(self.run_dir, shard, shards))
            pushes.append(push)
        return pushes

    def end_predecessor(self, record: Predecessor) -> None:
        """A receiver of this name died holding batches (a kill -9, a crash): have the ledger count them."""
        same_ring = len(record.streams) == self.shards
        pushes = self.batcher.pushes if same_ring else self.connect_shards(len(record.streams))
        refused = self.batcher.end_predecessor(record, pushes)
        if not same_ring:
            for push in pushes:
                push.close(linger=RECEIVER_STOP.linger_ms)
        log.warning("A killed predecessor (pid %d) held %d metrics unsent and %d datagrams read but not parsed: "
                    "ended its stream (epoch %d) on %d shards, so the forwarder's loss ledger counts those metrics, "
                    "and any of its batches lost on the way, in pystatsd.forwarder.lost_metrics; the datagrams' "
                    "metrics are not known", record.pid, record.held, record.unparsed, record.epoch,
                    len(record.streams))
        if refused:
            log.error("%d shards had no room for the end of the killed predecessor's stream: what it lost for "
                      "them is not counted", refused)

    def new_window(self, shards: int) -> Window:
        return new_window(shards, tag_tuple({}, self.defaults), statsd_lines(self.defaults, self.line_options),
                          rules=self.rules, keep_container_id=self.line_options.keep_container_id)

    @property
    def rule_dropped(self) -> int:
        """Metrics the rules dropped since this receiver started."""
        return self.rule_dropped_before + self.batcher.window.rule_dropped

    def tallies(self) -> list[int]:
        """Per tally of the rule set, the metrics counted under it since this receiver started."""
        return added(self.tallies_before, self.batcher.window.tallies)

    def follow_ring(self, now: float) -> None:
        """Switch to the ring the run directory's ring file names once its time has come (a reshard)."""
        ring = self.ring.current(now)
        if ring is None or ring.shards == self.shards or now < ring.since:
            return
        self.rule_dropped_before += self.batcher.window.rule_dropped
        self.tallies_before = self.tallies()
        for push in self.batcher.switch(self.connect_shards(ring.shards), self.new_window(ring.shards),
                                        PauseWatch.of_ring(self.run_dir, ring.shards)):
            push.close(linger=RECEIVER_STOP.linger_ms)
        log.info("Switched from %d shards to %d", self.shards, ring.shards)
        self.shards = ring.shards

    def _report_time(self, now: float) -> float:
        """Just before the current interval ends, so the figures land in the interval they describe."""
        interval = self.config.flush_interval
        return next_edge(now, interval) - min(0.1, interval / 10)

    def run(self, stop: StopSignal) -> None:
        # Plain file descriptors only (the ZeroMQ sockets are only ever sent on): select.poll is
        # lighter per wake-up than zmq.Poller, and a busy receiver wakes up thousands of times a second.
        poller = select.poll()
        poller.register(stop.fileno(), select.POLLIN)
        by_fd: dict[int, Any] = {}
        self.watch(poller, by_fd)
        while not stop.requested and not self.restart_wanted(stop):
            now = self.clock.time()
            due = self.batcher.next_due()
            wake = self.next_report if due is None else min(due, self.next_report)
            expiries = [e for e in (listener.next_expiry() for listener in self.listeners) if e is not None]
            wait = min([max(0.0, wake - now), *expiries, IDLE_WAKE_SECS])
            read = 0
            for fd, _ in poller.poll(math.ceil(wait * 1000)):
                listener = by_fd.get(fd)
                if listener is not None:
                    read += self.read(listener, fd)
                elif fd == stop.fileno():
                    stop.drain()
            if 0 < read < COALESCE_BELOW:
                time.sleep(COALESCE_SECS)
            if expiries and min(expiries) <= wait:
                for listener in self.listeners:
                    self.receive(listener.expire(self.bad))
            if any(listener.changed for listener in self.listeners):
                self.watch(poller, by_fd)
            self.send_due()
            if not read:  # a burst looks when it is shown to the taps (ReceiverTap.show); an idle wake-up here
                self.tap.look()
        if stop.requested:
            self.stop()
        else:
            self.restart_in_place()

    def read(self, listener: Any, fd: int) -> int:
        """What ``listener`` has waiting on ``fd`` (a poll found it ready) into the window; how many payloads."""
        payloads = self.capture.read(listener, fd, READ_BURST, self.bad)
        self.receive(payloads)
        return len(payloads)

    def send_due(self) -> None:
        """What is due by the clock's time: the window (old, or its interval ended), held batches whose
        shard's pause ended, this receiver's own counters."""
        now = self.clock.time()
        self.batcher.send_due(now)
        self.capture.follow(now, self.listeners)
        if now >= self.next_report:
            self.report(now)

    def watch(self, poller: select.poll, by_fd: dict[int, Any]) -> None:
        """Poll exactly the listeners' current sockets (stream listeners gain and lose connections)."""
        current = {fd: listener for listener in self.listeners for fd in listener.fds()}
        for fd in by_fd.keys() - current.keys():
            poller.unregister(fd)
        for fd in current.keys() - by_fd.keys():
            poller.register(fd, select.POLLIN)
        by_fd.clear()
        by_fd.update(current)

    def receive(self, payloads: list[bytes]) -> None:
        """Parse datagrams (or complete lines from a stream) into the open batch window."""
        if not payloads:
            return
        now = self.clock.time()
        if self.relay is not None:
            # Before parsing and the rules: every line as read, bad ones and dropped ones too.
            self.relay.forward(payloads, now)
        self.follow_ring(now)
        window = self.batcher.open(now)
        # The moment the window's batches will carry, so the interval a shard files them in.
        self.open_interval.open_at(self.batcher.opened_at)
        before = window.metrics
        self.batcher.unsent.reading(len(payloads))
        take_payloads(window, payloads, self.parse_payload, self.bad)
        self.tap.show(payloads)
        if self.records:
            self.records_out.send(self.records, now)
        self.datagrams += len(payloads)
        self.metrics += window.metrics - before
        self.batcher.filled()

    def report(self, now: float) -> None:
        """Hand this interval's own counters to the pipeline; log bad lines at most every 10 s."""
        self.next_report = self._report_time(now + 0.2)
        self.follow_ring(now)
        kernel_drops = self.kernel_drops()
        stats = self.stats
        stats.total("datagrams", self.datagrams)
        stats.total("metrics", self.metrics)
        stats.total("kernel_drops", kernel_drops)
        self.report_rules(stats)
        for reason, n in self.bad.items():
            stats.total("bad_lines", n, {"reason": reason})
        for kind, n in self.records_out.sent.items():
            stats.total("records", n, {"kind": kind})
        for kind, n in self.records_out.dropped.items():
            stats.total("records_dropped", n, {"kind": kind})
        for shard, n in enumerate(self.batcher.dropped):
            if n:
                stats.total("dropped", n, {"reason": "shard_full", "shard": str(shard)})
        for reason, n in self.streams.refused.items():
            stats.total("connections_refused", n, {"reason": reason})
        for reason, n in self.streams.closed.items():
            stats.total("connections_closed", n, {"reason": reason})
        for destination in self.relay.destinations if self.relay is not None else []:
            stats.total("relay_datagrams", destination.datagrams, {"destination": destination.name})
            for reason, n in destination.dropped.items():
                stats.total("relay_dropped", n, {"destination": destination.name, "reason": reason})
        samples = stats.samples()
        if samples:
            self.batcher.add(samples, now)
        self.publish_figures(kernel_drops)
        bad_total = sum(self.bad.values())
        if bad_total > self._bad_logged and self._bad_log.ready():
            log.warning("Dropped %d bad lines so far: %s", bad_total,
                        ", ".join(f"{reason}={n}" for reason, n in sorted(self.bad.items())))
            self._bad_logged = bad_total

    def report_rules(self, stats: SelfStats) -> None:
        """What each rule mapped and dropped, and what no rule matched, so far."""
        if self.rules is None:
            return
        unmatched, per_rule = rule_figures(self.rules, self.tallies())
        stats.total("rule_unmatched", unmatched)
        for rule, outcomes in per_rule.items():
            for outcome, n in outcomes.items():
                if outcome == MAPPED:
                    stats.total("rule_mapped", n, {"rule": rule})
                else:
                    stats.total("rule_dropped", n, {"rule": rule})

    def restart_wanted(self, stop: StopSignal) -> bool:
        """Whether a SIGHUP came and the config the new image would read is valid, its rules too (else it
        is logged, and the running config and rules are kept)."""
        if not stop.take_reload():
            return False
        if self.config_file is None:
            return True
        config = reread_config(self.config_file, self.config, log)
        if config is None:
            return False
        try:
            load_rule_set(config, rules_dir(self.config_file))
        except RulesError as exc:
            log.error("Reload refused, the running config and rules are kept: %s", exc)
            return False
        return True

    def publish_figures(self, kernel_drops: int) -> None:
        publish(self.run_dir, self.name, "receiver", self.figures(kernel_drops))

    def figures(self, kernel_drops: int) -> ReceiverFigures:
        unmatched, per_rule = rule_figures(self.rules, self.tallies()) if self.rules is not None else (0, {})
        return {
            "listeners": [listener.url for listener in self.listeners], "datagrams": self.datagrams,
            "metrics": self.metrics, "bad_lines": dict(self.bad), "kernel_drops": kernel_drops,
            "dropped_shard_full": {str(shard): n for shard, n in enumerate(self.batcher.dropped) if n},
            "rule_dropped": self.rule_dropped, "rule_unmatched": unmatched, "rules": per_rule,
            "connections": self.streams.open, "connections_refused": dict(self.streams.refused),
            "connections_closed": dict(self.streams.closed),
            "relay": {destination.name: {"datagrams": destination.datagrams, "dropped": dict(destination.dropped)}
                      for destination in (self.relay.destinations if self.relay is not None else [])}}

    def restart_in_place(self) -> None:
        """SIGHUP: every open batch to the shards, every socket kept open for the next image of this process."""
        log.info("Restarting in place: handing every open batch on, keeping every socket open")
        for listener in self.listeners:
            self.receive(listener.release())
        self.hand_on_and_close()
        hand_over(self.listeners, self.run_dir, self.name, self.kernel_drops(), self.config)
        self.restarting = True

    def kernel_drops(self) -> int:
        return sum(listener.kernel_drops() for listener in self.listeners)

    def stop(self) -> None:
        log.info("Stopping: reading what the kernel holds, then handing every open batch on")
        for listener in self.listeners:
            self.receive(listener.drain(self.bad))
            listener.close()
        self.hand_on_and_close()

    def hand_on_and_close(self) -> None:
        """Every open and held batch to the shards, then every socket to another stage or the command
        closed (a stop and a restart in place alike: the process ends next)."""
        self.batcher.send_all()
        self.batcher.release_all()
        self.batcher.unsent.close()
        for push in self.batcher.pushes:
            push.close(linger=RECEIVER_STOP.linger_ms)
        self.records_out.close()
        self.capture.close()
        if self.relay is not None:
            self.relay.close()
        self.tap.close()


def rules_dir(config_file: Path | None) -> Path:
    """Where a rule's relative path is read from: the config file's directory."""
    return config_file.absolute().parent if config_file is not None else Path.cwd()


def added(a: list[int], b: list[int]) -> list[int]:
    """``a`` and ``b`` added item by item, the shorter as if padded with zeros."""
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    return [n + (shorter[i] if i < len(shorter) else 0) for i, n in enumerate(longer)]


def rule_figures(rules: RuleSet, tallies: list[int]) -> tuple[int, dict[str, dict[str, int]]]:
    """From the windows' ``tallies`` of ``rules``: the metrics no rule matched, and per rule that decided
    any, the metrics it mapped and dropped (an outcome it never had left out)."""
    unmatched = 0
    per_rule: dict[str, dict[str, int]] = {}
    for (outcome, rule), n in zip(rules.tally_names(), tallies, strict=False):
        if rule is None:
            unmatched += n
        elif n:
            per_rule.setdefault(rule, {})[outcome] = n
    return unmatched, per_rule
