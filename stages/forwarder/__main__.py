"""Forwarder: ``python -m stages.forwarder --shards N``.

Binds PULL ``ipc://<run>/forwarder.sock`` (the stable end: every shard connects to it) and takes one
``pystatsd.flush.v1`` per shard per interval. It reads the header first and keeps a ledger of each
shard's flush sequence, so a flush that never arrived is counted. Each flush then goes to every sink
through :mod:`stages.forwarder.fanout`. Every interval it sends its own figures (per sink: delivered,
dropped, waiting; flushes lost) to every sink as ``<self_metrics_prefix>forwarder.*``.
On SIGTERM: keeps taking flushes until every shard sent its final one or none came for a second,
unbinds, and gives the sinks until the stop deadline to deliver everything.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from stages import contract
from stages.config import Config, ConfigError
from stages.figures import publish
from stages.forwarder.fanout import Fanout
from stages.forwarder.health import HealthServer
from stages.forwarder.ledger import CoverageLedger
from stages.forwarder.sinks import build_sinks, config_secrets
from stages.forwarder.sinks.base import Completion, Flush
from stages.listeners.inet import inet_address
from stages.model import MetricType, aggregate, tag_tuple
from stages.runtime import (
    EXIT_CONFIG,
    EXIT_OK,
    StopSignal,
    load_stage_config,
    redact_in_logs,
    run_dir,
    setup_logging,
    stage_arguments,
    take_lock,
)
from stages.sharding import forwarder_endpoint

log = logging.getLogger("stages.forwarder")

COUNTER = int(MetricType.COUNTER)
GAUGE = int(MetricType.GAUGE)

#: After SIGTERM, how long without a flush means no shard is still stopping.
STOP_QUIET_SECS = 1.0
#: The longest a stopping forwarder waits for shards' final flushes.
STOP_WAIT_FINALS_SECS = 10.0
#: What the sinks get to deliver their queues once the forwarder stops taking flushes.
SINK_DRAIN_SECS = 20.0


class Forwarder:
    def __init__(self, config: Config, shards: int, fanout: Fanout, ctx: zmq.Context[zmq.Socket[bytes]],
                 run: os.PathLike[str] | str) -> None:
        self.config = config
        self.shards = shards
        self.fanout = fanout
        self.endpoint = forwarder_endpoint(run)  # type: ignore[arg-type]
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, config.queues.forwarder_flushes)
        self.pull.bind(self.endpoint)
        #: (shard, epoch) → last flush seq seen
        self.last_seq: dict[tuple[int, int], int] = {}
        self.lost_flushes = 0
        self.run_dir = Path(run)
        self.ledger = CoverageLedger(self.run_dir / "forwarder-ledger.json")
        self.bad_messages = 0
        self.finals: set[int] = set()
        self._reported: dict[str, float] = {}
        self.next_report = self._report_time(time.time())

    def _report_time(self, now: float) -> float:
        interval = self.config.flush_interval
        return (math.floor(now / interval) + 1) * interval

    def run(self, stop: StopSignal) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(stop.fileno(), zmq.POLLIN)
        while not stop.requested:
            events = dict(poller.poll(max(0.0, (self.next_report - time.time()) * 1000)))
            if stop.fileno() in events:
                stop.drain()
            if self.pull in events:
                self.receive_all()
            if time.time() >= self.next_report:
                self.report()
        self.stop()

    def receive_all(self) -> int:
        received = 0
        while True:
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return received
            received += 1
            self.take(frames)

    def take(self, frames: list[bytes]) -> None:
        try:
            header = contract.decode_flush_header(frames)
            aggregates = contract.decode_flush_body(frames)
        except contract.DecodeError as exc:
            self.bad_messages += 1
            log.warning("Dropped a message that is not a valid flush (%s); %d so far", exc, self.bad_messages)
            return
        stream = (header.shard, header.epoch)
        last = self.last_seq.get(stream)
        if last is not None and header.seq > last + 1:
            lost = header.seq - last - 1
            self.lost_flushes += lost
            log.error("Lost %d flushes from shard %d between the shard and the forwarder", lost, header.shard)
        self.last_seq[stream] = header.seq
        if header.final:
            self.finals.add(header.shard)
        # The ledger counts a flush once every sink is done with it: a crash before then shows as a gap.
        completion = Completion(len(self.fanout.runners),
                                functools.partial(self.ledger.record, header.shard, header.covers))
        self.fanout.put(Flush(header, aggregates, len(frames[2]), completion))

    def report(self) -> None:
        """Send this stage's own figures to every sink, stamped with the interval that just ended."""
        end = self.next_report
        self.next_report = self._report_time(time.time() + 0.001)
        publish(self.run_dir, "forwarder", {
            "sinks": {runner.name: {"delivered": runner.delivered, "waiting": runner.pending(),
                                    "dropped": dict(runner.dropped), "errors": runner.errors,
                                    "failing": runner.last_error} for runner in self.fanout.runners},
            "lost_samples": sum(self.ledger.lost_samples.values()), "lost_flushes": self.lost_flushes,
            "bad_messages": self.bad_messages})
        prefix = self.config.self_metrics_prefix
        if not prefix:
            return
        interval = self.config.flush_interval
        defaults = self.config.agent.tags
        out: list[dict[str, Any]] = []

        def counter(name: str, total: float, **tags: str) -> None:
            key = name + repr(sorted(tags.items()))
            delta = total - self._reported.get(key, 0.0)
            self._reported[key] = total
            if delta:
                out.append(aggregate(f"{prefix}forwarder.{name}", COUNTER, tag_tuple(tags, defaults), end, interval,
                                     value=delta, rate=delta / interval))

        for runner in self.fanout.runners:
            counter("delivered", float(runner.delivered), sink=runner.name)
            counter("errors", float(runner.errors), sink=runner.name)
            for reason, n in runner.dropped.items():
                counter("dropped", float(n), sink=runner.name, reason=reason)
            out.append(aggregate(f"{prefix}forwarder.waiting", GAUGE, tag_tuple({"sink": runner.name}, defaults),
                                 end, interval, value=float(runner.pending())))
        counter("lost_flushes", float(self.lost_flushes))
        for shard, samples in self.ledger.lost_samples.items():
            counter("lost_samples", float(samples), shard=str(shard))
            counter("lost_batches", float(self.ledger.lost_batches[shard]), shard=str(shard))
        header = contract.FlushHeader(shard=-1, shards=self.shards, epoch=0, seq=0, interval_start=end - interval,
                                      interval=interval, n=len(out))
        self.fanout.put(Flush(header, out, 0))

    def stop(self) -> None:
        log.info("Stopping: taking the shards' last flushes")
        started = time.monotonic()
        quiet_since = started
        while len(self.finals) < self.shards and time.monotonic() - started < STOP_WAIT_FINALS_SECS:
            if self.pull.poll(100):
                self.receive_all()
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= STOP_QUIET_SECS:
                break
        self.pull.unbind(self.endpoint)
        self.receive_all()
        self.pull.close(linger=0)
        self.fanout.stop(SINK_DRAIN_SECS)


def main(argv: list[str] | None = None) -> int:
    parser = stage_arguments("The pystatsd forwarder: flushes in, every configured sink out.")
    args = parser.parse_args(argv)
    setup_logging("forwarder")
    config = load_stage_config(args)
    try:
        redact_in_logs(config_secrets(config))
        sinks = build_sinks(config)
    except ConfigError as exc:
        log.error("Config error: %s", exc)
        return EXIT_CONFIG
    run = run_dir(args, config)
    lock = take_lock(run, "forwarder")
    health_server = None
    if config.health_address:
        try:
            health_server = HealthServer(inet_address(config.health_address), run, args.shards, config.flush_interval)
        except OSError as exc:
            log.error("Cannot serve health on %s: %s", config.health_address, exc.strerror)
            return EXIT_CONFIG
    stop = StopSignal()
    fanout = Fanout(sinks)
    fanout.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    forwarder = Forwarder(config, args.shards, fanout, ctx, run)
    log.info("Forwarding to %s on %s", ", ".join(s.name for s, _ in sinks), forwarder.endpoint)
    if health_server is not None:
        health_server.start()
    forwarder.run(stop)
    if health_server is not None:
        health_server.close()
    ctx.term()
    lock.close()
    log.info("Stopped")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
