"""The receiver as a stage process: its arguments, what it checks and opens before its loop
(:class:`.receiver_loop.Receiver`) runs, and what it closes after; :func:`main` runs it."""

from __future__ import annotations

import argparse
from pathlib import Path

import zmq

from stages.common.config import Config, config_path
from stages.common.lifecycle import Loop, Stage, StartError, run_stage
from stages.common.process_names import RECEIVER, process_name
from stages.receiver.receiver_loop import Receiver, log


class ReceiverStage(Stage, stage=RECEIVER, log=log,
                    description="The pystatsd receiver: UDP, TCP and Unix sockets in, batches out to the shards."):
    def __init__(self) -> None:
        self.receiver: Receiver | None = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", default=process_name(RECEIVER),
                            help="this receiver's name in batches and self-metrics")
        parser.add_argument("--extra-receivers", type=int, default=0,
                            help="receivers beyond the first; with any, every receiver binds its UDP and TCP "
                                 "ports with SO_REUSEPORT so they share them")
        parser.add_argument("--index", type=int, default=0,
                            help="this receiver's number, 0 for the first (only it serves Unix sockets)")

    def name(self, args: argparse.Namespace) -> str:
        return str(args.name)

    def start(self, args: argparse.Namespace, config: Config, run: Path, ctx: zmq.Context[zmq.Socket[bytes]]) -> Loop:
        try:
            self.receiver = Receiver(config, args.shards, ctx, run, args.name, args.extra_receivers, args.index,
                                     config_path(args.config))
        except (OSError, ValueError) as exc:
            raise StartError("Cannot start: %s", exc) from exc
        return self.receiver

    def restart_in_place(self) -> bool:
        return self.receiver is not None and self.receiver.restarting

    def stopped(self) -> None:
        assert self.receiver is not None
        log.info("Stopped after %d datagrams, %d metrics", self.receiver.datagrams, self.receiver.metrics)


def main(argv: list[str] | None = None) -> int:
    return run_stage(ReceiverStage(), argv)
