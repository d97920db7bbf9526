"""The copies of the running config the forwarder keeps in the run directory: they are what it read,
never the file read again (a file edited while it starts would otherwise be shown by ``pystatsd reload``
as what runs, and its changes hidden)."""

from __future__ import annotations

import argparse
from pathlib import Path

import zmq

from stages.common.lifecycle import load_stage_config
from stages.forwarder.forwarder_loop import Forwarder
from stages.forwarder.stage import ForwarderStage
from stages.rundir.config_copies import RUNNING, SOURCE, STARTED

READ = "flush_interval: 2\nforwarders: {console: {}}\n"
EDITED = "flush_interval: 5\nforwarders: {console: {}}\n"


def test_the_copies_are_the_config_the_forwarder_read_though_the_file_changed_before_it_started(
        short_tmp_path: Path) -> None:
    config_file, run = short_tmp_path / "pystatsd.yaml", short_tmp_path / "run"
    config_file.write_text(READ)
    run.mkdir(mode=0o700)
    args = argparse.Namespace(config=str(config_file), shards=1, run_dir=str(run))
    stage = ForwarderStage()
    config, stage.config_source = load_stage_config(args)
    stage.check(args, config)
    config_file.write_text(EDITED)  # after the forwarder read it, before it started
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        loop = stage.start(args, config, run, ctx)
        assert isinstance(loop, Forwarder)
        assert (run / STARTED).read_text() == READ
        assert (run / RUNNING).read_text() == READ
        assert (run / SOURCE).read_text() == str(config_file)
        loop.fanout.stop(0.5, 0.5)
        stage.close()
    finally:
        ctx.destroy(linger=0)
