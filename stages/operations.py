"""Planned operations on a running instance, through its supervisord: restarts that lose nothing.

``pystatsd restart receiver`` signals every receiver to restart in place (SIGHUP: its sockets stay
bound, see :mod:`stages.receiver.handover`) and waits until each runs its new image. ``restart
aggregator`` restarts the shards one after the other (each hands its open intervals to its next
instance, see :mod:`stages.aggregator.handoff`), ``restart aggregator-K`` one of them, ``restart
forwarder`` the forwarder (the shards hold their flushes meanwhile).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stages import supervisor_rpc
from stages.figures import read_all

#: How long a receiver may take to come back in place before the command calls it failed.
IN_PLACE_TIMEOUT_SECS = 20.0


class OperationError(Exception):
    """The operation could not be done; the message says why (and what still runs)."""


def processes(run_dir: Path) -> list[dict[str, Any]]:
    infos = supervisor_rpc.call(run_dir, "getAllProcessInfo")
    if not isinstance(infos, list):
        raise OperationError(f"no supervisord answers on {run_dir / 'supervisor.sock'}: is pystatsd running there?")
    return infos


def restart(run_dir: Path, target: str) -> list[str]:
    """Restart ``target`` (receiver, aggregator, aggregator-K, forwarder); what was done, line by line."""
    infos = processes(run_dir)
    if target == "receiver":
        return restart_receivers(run_dir, [i for i in infos if i["name"].startswith("receiver")])
    chosen = [i for i in infos if i["name"] == target or (target == "aggregator" and i["group"] == "aggregator")]
    if not chosen:
        names = ", ".join(sorted({"receiver", "aggregator", "forwarder", *(i["name"] for i in infos)}))
        raise OperationError(f"no process {target!r} here (one of: {names})")
    done = []
    for info in sorted(chosen, key=lambda i: i["name"]):
        full = f"{info['group']}:{info['name']}"
        methods = ("stopProcess", "startProcess") if info["statename"] == "RUNNING" else ("startProcess",)
        for method in methods:
            if supervisor_rpc.call(run_dir, method, full, True) is not True:
                raise OperationError(f"{method} {full} failed: see its log; the processes before it were restarted")
        done.append(f"{info['name']} restarted")
    return done


def restart_receivers(run_dir: Path, receivers: list[dict[str, Any]]) -> list[str]:
    """SIGHUP every running receiver, then wait until each runs a new image under the same pid."""
    running = [i for i in receivers if i["statename"] == "RUNNING"]
    if not running:
        raise OperationError("no receiver is running")
    before = read_all(run_dir)
    for info in running:
        full = f"{info['group']}:{info['name']}"
        if supervisor_rpc.call(run_dir, "signalProcess", full, "HUP") is not True:
            raise OperationError(f"cannot signal {full}")
    deadline = time.monotonic() + IN_PLACE_TIMEOUT_SECS
    waiting = {i["name"]: (i["pid"], before.get(i["name"], {}).get("started", 0.0)) for i in running}
    while waiting and time.monotonic() < deadline:
        time.sleep(0.1)
        records = read_all(run_dir)
        for name, (pid, started) in list(waiting.items()):
            record = records.get(name, {})
            if record.get("pid") == pid and record.get("started", 0.0) > started:
                del waiting[name]
    if waiting:
        raise OperationError(f"{', '.join(sorted(waiting))} did not come back in place within "
                             f"{IN_PLACE_TIMEOUT_SECS:.0f} s: see the log")
    return [f"{i['name']} restarted in place (pid {i['pid']}, its sockets kept open)" for i in running]
