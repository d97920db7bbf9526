"""The aggregator as a stage process: its arguments, what it checks and opens before its loop
(:class:`.shard_loop.ShardLoop`) runs, and what it closes after; :func:`main` runs it."""

from __future__ import annotations

import argparse
from pathlib import Path

import zmq

from stages.aggregator.fleet.loop import FleetLoop
from stages.aggregator.series import CompiledBucket
from stages.aggregator.shard_loop import ShardLoop, log
from stages.common.compiled import wanted as use_compiled
from stages.common.config import Config, ConfigError, config_path
from stages.common.lifecycle import Loop, Stage, StartError, run_stage
from stages.common.partial_bounds import PartialBounds, partial_bounds
from stages.common.process_names import AGGREGATOR, process_name


class ShardStage(Stage, stage=AGGREGATOR, description="One aggregator shard of pystatsd.", log=log):
    #: What the config's sink of format: partials asks for, read by check (None: no such sink).
    partial_bounds: PartialBounds | None = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--shard", type=int, required=True, help="this shard's number, 0..shards-1")

    def name(self, args: argparse.Namespace) -> str:
        return process_name(AGGREGATOR, args.shard)

    def lock_name(self, args: argparse.Namespace) -> str:
        # Per ring, as the socket: shard K of the old ring and of the new one run side by side in a reshard.
        return f"shard-{args.shard}-of-{args.shards}"

    def check(self, args: argparse.Namespace, config: Config) -> None:
        if not 0 <= args.shard < args.shards:
            raise StartError("Config error: --shard %d is not in 0..%d", args.shard, args.shards - 1)
        try:
            self.partial_bounds = partial_bounds(config)  # the sinks' configs, read here for format: partials
        except ConfigError as exc:
            raise StartError("Config error: %s", exc) from exc

    def start(self, args: argparse.Namespace, config: Config, run: Path, ctx: zmq.Context[zmq.Socket[bytes]]) -> Loop:
        if config.fleet_input is not None:
            fleet = FleetLoop(config, args.shard, args.shards, ctx, run)
            log.info("Fleet shard %d of %d reading partials from Kafka topic %s as group %s", args.shard, args.shards,
                     config.fleet_input.kafka_topic, config.fleet_input.group)
            return fleet
        loop = ShardLoop(config, args.shard, args.shards, ctx, run, config_path(args.config), self.partial_bounds)
        log.info("Shard %d of %d listening on %s; batches merged in %s", args.shard, args.shards, loop.endpoint,
                 "C" if CompiledBucket is not None and use_compiled() else "Python")
        return loop


def main(argv: list[str] | None = None) -> int:
    return run_stage(ShardStage(), argv)
