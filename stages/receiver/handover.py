"""A receiver that restarts in place, its sockets open throughout: nothing the kernel took is lost.

On SIGHUP (``pystatsd restart receiver``, ``pystatsd reload``) the receiver hands its open batches
to the shards, keeps every listening socket (and TCP or Unix stream connection) open across an
``exec`` of itself, and says which is which in a private file of the run directory; the new image
(new code, the config as it is now) adopts each socket its config still lists and closes the
others. The pid stays the same, so supervisord sees no exit, and the sockets stay bound: what
arrives meanwhile waits in their kernel queues (``receive_buffer_bytes``) and is read by the new
image; only what overflows a queue is lost, and that is counted (``kernel_drops``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from stages.config import Config, QueueConfig
from stages.private_file import read_private, write_private

log = logging.getLogger(__name__)

#: Where the new image finds the hand-over file: set by the old image just before its exec.
HANDOVER_ENV = "PYSTATSD_RECEIVER_HANDOVER"


def hand_over(listeners: list[Any], run_dir: Path, name: str, kernel_drops: int, config: Config) -> None:
    """Ready ``listeners`` to outlive an exec of this process and describe them for the next image,
    with the settings the pipeline runs on that only a restart of it may change."""
    record = {"pid": os.getpid(), "kernel_drops": kernel_drops,
              "listeners": {listener.url: listener.hand_over() for listener in listeners},
              "running": {"flush_interval": config.flush_interval, "queues": dataclasses.asdict(config.queues)}}
    path = run_dir / f"{name}.handover.json"
    write_private(path, json.dumps(record).encode())
    os.environ[HANDOVER_ENV] = str(path)


def take_over() -> dict[str, Any] | None:
    """What the previous image of this process handed over (removed once read), or None."""
    where = os.environ.pop(HANDOVER_ENV, None)
    if not where:
        return None
    path = Path(where)
    try:
        record: dict[str, Any] = json.loads(read_private(path))
        path.unlink()
    except (OSError, ValueError) as exc:
        log.error("Cannot read the hand-over %s (%s): opening every listener anew", path, exc)
        return None
    if record.get("pid") != os.getpid():  # an exec keeps the pid: another process's file is not ours
        log.error("The hand-over %s is another process's: opening every listener anew", path)
        return None
    return record


def running_config(config: Config, record: dict[str, Any]) -> Config:
    """``config`` (read anew) with the settings the pipeline runs on as the last image ran them."""
    running = record["running"]
    queues = QueueConfig(**running["queues"])
    return dataclasses.replace(config, flush_interval=running["flush_interval"], queues=queues)


def close_held(held: dict[str, Any]) -> None:
    """Close the sockets of a handed-over listener that the config no longer lists."""
    fds = [held[key] for key in ("fd", "server") if key in held]
    fds += [fd for fd, _, _ in held.get("connections", [])]
    for fd in fds:
        socket.socket(fileno=fd).close()
