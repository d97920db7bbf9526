"""The forwarder as a stage process: its arguments, what it checks and opens before its loop
(:class:`.forwarder_loop.Forwarder`) runs, and what it closes after; :func:`main` runs it."""

from __future__ import annotations

import argparse
from pathlib import Path

import zmq

from stages.common.addresses import inet_address
from stages.common.config import Config, ConfigError, config_path
from stages.common.lifecycle import Loop, Stage, StartError, redact_in_logs, run_stage
from stages.common.process_names import FORWARDER, process_name
from stages.forwarder.fanout import Fanout
from stages.forwarder.forwarder_loop import Forwarder, log
from stages.forwarder.health import HealthServer
from stages.forwarder.sinks import build_sinks, config_secrets
from stages.forwarder.sinks.base import NamedSink
from stages.rundir.config_copies import RUNNING, STARTED, keep_copy


class ForwarderStage(Stage, stage=FORWARDER, log=log,
                     description="The pystatsd forwarder: flushes in, every configured sink out."):
    def __init__(self) -> None:
        self.sinks: list[NamedSink] = []
        self.health_server: HealthServer | None = None

    def lock_name(self, args: argparse.Namespace) -> str:
        return process_name(FORWARDER)

    def check(self, args: argparse.Namespace, config: Config) -> None:
        try:
            redact_in_logs(config_secrets(config))
            self.sinks = build_sinks(config)
        except ConfigError as exc:
            raise StartError("Config error: %s", exc) from exc

    def start(self, args: argparse.Namespace, config: Config, run: Path, ctx: zmq.Context[zmq.Socket[bytes]]) -> Loop:
        if config.health_address:
            try:
                self.health_server = HealthServer(inet_address(config.health_address), run, args.shards,
                                                  config.flush_interval)
            except OSError as exc:
                raise StartError("Cannot serve health on %s: %s", config.health_address, exc.strerror) from exc
        fanout = Fanout(self.sinks)
        fanout.start()
        config_file = config_path(args.config)
        forwarder = Forwarder(config, args.shards, fanout, ctx, run, config_file)
        for copy in (STARTED, RUNNING):
            keep_copy(run, copy, config_file, self.config_source)
        log.info("Forwarding to %s on %s", ", ".join(sink.name for sink in self.sinks), forwarder.endpoint)
        if self.health_server is not None:
            self.health_server.start()
        return forwarder

    def close(self) -> None:
        if self.health_server is not None:
            self.health_server.close()


def main(argv: list[str] | None = None) -> int:
    return run_stage(ForwarderStage(), argv)
