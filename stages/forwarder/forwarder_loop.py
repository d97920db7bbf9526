"""Forwarder: ``python -m stages.forwarder --shards N``.

Binds PULL ``ipc://<run>/forwarder.sock`` (the stable end: every shard connects to it) and takes one
``pystatsd.flush.v1`` per shard per interval (and the receivers' ``pystatsd.records.v1``: events and
service checks, for the sinks that carry them). It reads the header first and keeps a ledger of each
shard's flush sequence, so a flush that never arrived is counted. Each flush then goes to every sink
through :mod:`stages.forwarder.fanout`. Every interval it sends its own figures (per sink: delivered,
dropped, waiting, a sink a reload removed included; flushes and metrics lost) to every sink as
``<self_metrics_prefix>forwarder.*``, in a flush of its own
(:func:`stages.common.contract.self_flush_header`: shard -1).
On SIGTERM when it is stopped alone (a restart): pauses the shards (:mod:`stages.rundir.pause`: they hold
their flushes, so none is in flight when it unbinds). When the pipeline stops: keeps taking flushes
until every shard sent its final one or none came for a second. Then unbinds, and gives the sinks
until the stop deadline to deliver everything.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

import zmq

from stages.common import contract, supervisor_rpc
from stages.common.clock import SYSTEM_CLOCK, Clock
from stages.common.config import Config, ConfigError
from stages.common.figure_schemas import ForwarderFigures, SinkFigures
from stages.common.intervals import next_edge
from stages.common.lifecycle import (
    FORWARDER_STOP,
    PullWakeups,
    StopSignal,
    redact_in_logs,
    reread_config_file,
)
from stages.common.process_names import FORWARDER, process_name
from stages.common.selfstats import SelfStats
from stages.common.sharding import forwarder_endpoint
from stages.forwarder.fanout import Fanout
from stages.forwarder.ledger import CoverageLedger, Taken
from stages.forwarder.sinks import build_sinks, config_secrets
from stages.forwarder.sinks.base import Completion, EncodedAggregates, Flush
from stages.forwarder.tap_flushes import FlushTap
from stages.rundir.config_copies import RUNNING, keep_copy
from stages.rundir.delivery import DeliveryRecorder, forwarder_identity
from stages.rundir.figures import publish
from stages.rundir.pause import begin_pause, end_pause, forwarder_pause_path
from stages.rundir.ring import ring_shards

log = logging.getLogger("stages.forwarder")


class Forwarder:
    def __init__(self, config: Config, shards: int, fanout: Fanout, ctx: zmq.Context[zmq.Socket[bytes]],
                 run: os.PathLike[str] | str, config_file: Path, clock: Clock = SYSTEM_CLOCK,
                 stopped_alone: Callable[[Path], bool] = supervisor_rpc.runs_on_without) -> None:
        self.config = config
        self.clock = clock
        #: Whether the pipeline runs on while this forwarder stops (a restart: pause the shards) or
        #: stops with it (take the finals); supervisord says, or a test.
        self.stopped_alone = stopped_alone
        self.config_file = config_file
        self.shards = shards
        self.fanout = fanout
        self.endpoint = forwarder_endpoint(run)
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, config.queues.forwarder_flushes)
        self.pull.bind(self.endpoint)
        # Bound: the shards may send what they held for this instance (or for none: a pause left behind).
        end_pause(forwarder_pause_path(Path(run)))
        #: (shard, epoch) → last flush seq seen
        self.last_seq: dict[tuple[int, int], int] = {}
        self.lost_flushes = 0
        self.run_dir = Path(run)
        self.ledger = CoverageLedger(self.run_dir / "forwarder-ledger.json")
        self.bad_messages = 0
        #: Events and service checks that came while no sink carried records.
        self.records_without_sink = 0
        #: (shard, shards) of every final flush: a ring retired by a reshard sent its own.
        self.finals: set[tuple[int, int]] = set()
        #: (shard, shards) of every ``paused`` flush, in a stop for a restart.
        self.paused: set[tuple[int, int]] = set()
        self.stats = SelfStats(config.self_metrics_prefix, "forwarder", {}, config.agent.tags)
        self.delivery = DeliveryRecorder(self.run_dir, forwarder_identity(os.getpid()))
        if config.fleet_input is not None:
            self.delivery.announce(list(range(ring_shards(self.run_dir, shards, clock.time()))))
        self.next_report = self._report_time(self.clock.time())
        #: pystatsd tap's view of the flushes: nothing while no tap listens.
        self.tap = FlushTap(ctx, self.run_dir, FORWARDER)

    def _report_time(self, now: float) -> float:
        return next_edge(now, self.config.flush_interval)

    def run(self, stop: StopSignal) -> None:
        wakeups = PullWakeups(self.pull, stop)
        while not stop.requested:
            if wakeups.wait((self.next_report - self.clock.time()) * 1000):
                self.receive_all()
            self.tap.look()
            if stop.take_reload():
                self.reload()
            self.report_if_due()
        self.stop()

    def report_if_due(self) -> None:
        """This stage's own figures, once the clock has reached the interval's edge."""
        if self.clock.time() >= self.next_report:
            self.report()

    def reload(self) -> None:
        """SIGHUP: the sinks as the config now says, from the next flush on; a changed sink's new
        settings deliver first what the old ones still held, a removed sink gets the stop's drain and
        what is left is counted as dropped (reason removed). A config that is not valid changes nothing."""
        reread = reread_config_file(self.config_file, self.config, log)
        if reread is None:
            return
        config, source = reread
        try:
            sinks = build_sinks(config)
            redact_in_logs(config_secrets(config))
        except ConfigError as exc:
            log.error("Reload refused, the running config is kept: %s", exc)
            return
        changes = self.fanout.reconfigure(sinks, FORWARDER_STOP.sink_drain_secs)
        self.stats.retag(config.self_metrics_prefix, config.agent.tags)
        self.config = config
        keep_copy(self.run_dir, RUNNING, self.config_file, source)
        log.info("Sinks after the reload: %s (%s)", ", ".join(runner.name for runner in self.fanout.runners),
                 "; ".join(changes) or "none changed")

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
        if frames and frames[0] == contract.RECORDS_V1:
            self.take_records(frames)
            return
        try:
            header = contract.decode_flush_header(frames)
            count = contract.flush_body_count(frames)
            if count != header.n:
                raise contract.DecodeError("bad_body", f"{count} aggregates, the header says {header.n}")
            partials = contract.decode_flush_partials(frames)
        except contract.DecodeError as exc:
            self.bad_messages += 1
            log.warning("Dropped a message that is not a valid flush (%s); %d so far", exc, self.bad_messages)
            return
        if header.paused:
            self.paused.add((header.shard, header.shards))
            return
        stream = (header.shard, header.epoch)
        last = self.last_seq.get(stream)
        if last is not None and header.seq > last + 1:
            lost = header.seq - last - 1
            self.lost_flushes += lost
            log.error("Lost %d flushes from shard %d between the shard and the forwarder", lost, header.shard)
        self.last_seq[stream] = header.seq
        if header.final:
            self.finals.add((header.shard, header.shards))
        # The ledger counts a flush once every sink is done with it: a crash before then shows as a gap.
        taken = self.ledger.taken(header.shard, header.covers)
        completion = Completion(len(self.fanout.runners), functools.partial(self.flush_done, header, taken))
        # Kept encoded until a sink writes it: what the sinks' buffers hold is then what they count.
        aggregates = EncodedAggregates(count, functools.partial(contract.flush_body_chunks, frames[:3]))
        self.fanout.put(Flush(header, aggregates, len(frames[2]) + (len(frames[3]) if partials else 0), completion,
                              partials))
        log.debug("Took flush %d of shard %d: %d aggregates, handed to %d sinks", header.seq, header.shard,
                  count, len(self.fanout.runners))
        self.tap.show(frames)

    def take_records(self, frames: list[bytes]) -> None:
        """A receiver's events and service checks, to the sinks that carry records (in no ledger); with
        none, counted as dropped."""
        try:
            header, records = contract.decode_records(frames)
        except contract.DecodeError as exc:
            self.bad_messages += 1
            log.warning("Dropped a message that is not valid records (%s); %d so far", exc, self.bad_messages)
            return
        flush_header = contract.records_flush_header(header, self.shards, self.config.flush_interval,
                                                     self.clock.time())
        if not self.fanout.put_records(Flush(flush_header, records, len(frames[2]))):
            self.records_without_sink += header.n
            log.debug("Dropped %d records: no sink carries them", header.n)

    def flush_done(self, header: contract.FlushHeader, taken: Taken | None) -> None:
        """Every sink is done with the flush (on the last sink's thread)."""
        self.ledger.done(taken)
        if header.ack:
            self.delivery.record(header.shard, header.epoch, header.seq)

    def report(self) -> None:
        """Send this stage's own figures to every sink, stamped with the interval that just ended."""
        end = self.next_report
        self.next_report = self._report_time(self.clock.time() + 0.001)
        self.fanout.finish_retired()
        sinks = self.fanout.figures()
        publish(self.run_dir, process_name(FORWARDER), "forwarder", self.figures(sinks))
        stats = self.stats
        if not stats.enabled:
            return
        for name, figures in sinks.items():
            # Tags as literals, each call's own: tests check them against stages/common/self_metrics.yaml.
            stats.total("delivered", figures["delivered"], {"sink": name})
            stats.total("errors", figures["errors"], {"sink": name})
            for reason, n in figures["dropped"].items():
                stats.total("dropped", n, {"sink": name, "reason": reason})
            stats.gauge("waiting", figures["waiting"], {"sink": name})
        stats.total("lost_flushes", self.lost_flushes)
        stats.total("records_without_sink", self.records_without_sink)
        for shard, metrics in self.ledger.lost_metrics.items():
            stats.total("lost_metrics", metrics, {"shard": str(shard)})
            stats.total("lost_batches", self.ledger.lost_batches[shard], {"shard": str(shard)})
        interval = self.config.flush_interval
        out = stats.aggregates(end, interval)
        self.fanout.put(Flush(contract.self_flush_header(self.shards, end - interval, interval, len(out)), out, 0))
        log.debug("Own metrics: %d aggregates handed to %d sinks", len(out), len(self.fanout.runners))

    def figures(self, sinks: dict[str, SinkFigures]) -> ForwarderFigures:
        return {"sinks": sinks, "lost_metrics": sum(self.ledger.lost_metrics.values()),
                "lost_flushes": self.lost_flushes, "bad_messages": self.bad_messages}

    def stop(self) -> None:
        # The fleet tier's shards send again what a forwarder took but its sinks never confirmed.
        if self.config.fleet_input is None and self.stopped_alone(self.run_dir):
            self.pause_shards()
        else:
            self.take_finals()
        self.pull.unbind(self.endpoint)
        self.receive_all()
        self.pull.close(linger=0)
        self.tap.close()
        self.fanout.stop(FORWARDER_STOP.sink_drain_secs, FORWARDER_STOP.sink_join_slack_secs)

    def pause_shards(self) -> None:
        """Stopped alone (a restart): until every shard of the ring holds its flushes (each sent
        ``paused`` last), taking what comes meanwhile; at most FORWARDER_STOP.pause_max_secs."""
        try:
            begin_pause(forwarder_pause_path(self.run_dir), FORWARDER_STOP.hold_secs)
        except OSError as exc:
            log.error("Cannot write the pause for the shards (%s): flushes on the way when this forwarder "
                      "unbinds may be lost (counted)", exc.strerror)
            self.take_finals()
            return
        log.info("Stopping for a restart: pausing the shards")
        started = self.clock.monotonic()
        shards = ring_shards(self.run_dir, self.shards, self.clock.time())
        expected = {(shard, shards) for shard in range(shards)}
        while expected - self.paused and self.clock.monotonic() - started < FORWARDER_STOP.pause_max_secs:
            if self.pull.poll(50):
                self.receive_all()
        missing = sorted(shard for shard, _ in expected - self.paused)
        if missing:
            log.warning("No pause from shards %s within %.1f s: a flush they had on the way when this forwarder "
                        "unbinds may be lost (counted by the next instance)", missing, FORWARDER_STOP.pause_max_secs)
        log.info("Shards paused in %.2f s (%d of %d)", self.clock.monotonic() - started, len(expected & self.paused),
                 len(expected))

    def take_finals(self) -> None:
        """The pipeline stops: until every shard sent its final flush, or none came for a while."""
        log.info("Stopping: taking the shards' last flushes")
        started = self.clock.monotonic()
        quiet_since = started
        shards = ring_shards(self.run_dir, self.shards, self.clock.time())  # after a reshard, the ring file's count
        while (sum(ring == shards for _, ring in self.finals) < shards
               and self.clock.monotonic() - started < FORWARDER_STOP.wait_finals_secs):
            if self.pull.poll(100):
                self.receive_all()
                quiet_since = self.clock.monotonic()
            elif self.clock.monotonic() - quiet_since >= FORWARDER_STOP.quiet_secs:
                break
