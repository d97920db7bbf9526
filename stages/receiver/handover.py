"""A receiver that restarts in place, its sockets open throughout: nothing the kernel took is lost.

On SIGHUP (``pystatsd restart receiver``, ``pystatsd reload``) the receiver hands its open batches
to the shards, keeps every listening socket (and TCP or Unix stream connection) open across an
``exec`` of itself, and says which is which in a private file of the run directory; the new image
(new code, the config as it is now) adopts each socket its config still lists and closes the
others. The pid stays the same, so supervisord sees no exit, and the sockets stay bound: what
arrives meanwhile waits in their kernel queues (``receive_buffer_bytes``) and is read by the new
image; only what overflows a queue is lost, and that is counted (``kernel_drops``).

The file is JSON: ``{"kind": "pystatsd.handover.v1", "pid", "kernel_drops", "listeners": {url: what
the listener's adopt() needs}, "running": {the keys a reload cannot change}}``. An upgrade by restart
in place has the old release write it and the new one read it. Within v1 keys may only be added, each
with a default, and each addition gets a golden file of its own (tests/data/rundir/handover.v1*.json):
the writer produces the newest bytes and the reader keeps reading every older file. The release before
v1 wrote the same keys without ``kind`` (and only flush_interval and queues under ``running``): that
form is read as v1 (golden handover.unversioned.json) for one release. Any other change is a new kind.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from stages.common.config import Config
from stages.common.config_diff import restart_settings, with_restart_settings
from stages.rundir.private_file import read_private, write_private

log = logging.getLogger(__name__)

#: Where the new image finds the hand-over file: set by the old image just before its exec.
HANDOVER_ENV = "PYSTATSD_RECEIVER_HANDOVER"
HANDOVER_V1 = "pystatsd.handover.v1"


def hand_over(listeners: list[Any], run_dir: Path, name: str, kernel_drops: int, config: Config) -> None:
    """Ready ``listeners`` to outlive an exec of this process and describe them for the next image,
    with the settings the pipeline runs on that only a restart of it may change."""
    held = {listener.url: listener.hand_over() for listener in listeners}
    path = run_dir / f"{name}.handover.json"
    write_private(path, encode_handover(os.getpid(), kernel_drops, held, config))
    os.environ[HANDOVER_ENV] = str(path)


def encode_handover(pid: int, kernel_drops: int, held: dict[str, dict[str, Any]], config: Config) -> bytes:
    """The hand-over file's bytes: ``held`` is url → what each listener's ``hand_over()`` returned."""
    return json.dumps({"kind": HANDOVER_V1, "pid": pid, "kernel_drops": kernel_drops, "listeners": held,
                       "running": restart_settings(config)}).encode()


def decode_handover(data: bytes) -> dict[str, Any]:
    """The record :func:`encode_handover` wrote (without its kind); ValueError naming what is wrong."""
    record = json.loads(data)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    kind = record.pop("kind", HANDOVER_V1)  # the release before v1 wrote the same keys without a kind
    if kind != HANDOVER_V1:
        raise ValueError(f"kind is {kind!r}, not {HANDOVER_V1!r}")
    for key in ("pid", "listeners"):
        if key not in record:
            raise ValueError(f"no {key!r}")
    return record


def take_over() -> dict[str, Any] | None:
    """What the previous image of this process handed over (removed once read), or None."""
    where = os.environ.pop(HANDOVER_ENV, None)
    if not where:
        return None
    path = Path(where)
    try:
        data = read_private(path)
        path.unlink()
        record = decode_handover(data)
    except (OSError, ValueError) as exc:
        log.error("Cannot read the hand-over %s (%s): opening every listener anew", path, exc)
        return None
    if record.get("pid") != os.getpid():  # an exec keeps the pid: another process's file is not ours
        log.error("The hand-over %s is another process's: opening every listener anew", path)
        return None
    return record


def running_config(config: Config, record: dict[str, Any]) -> Config:
    """``config`` (read anew) with the settings the pipeline runs on as the last image ran them."""
    return with_restart_settings(config, record.get("running", {}))


def close_held(held: dict[str, Any]) -> None:
    """Close the sockets of a handed-over listener that the config no longer lists."""
    fds = [held[key] for key in ("fd", "server") if key in held]
    fds += [fd for fd, _, _ in held.get("connections", [])]
    for fd in fds:
        socket.socket(fileno=fd).close()
