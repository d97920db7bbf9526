"""Planned operations on a running instance, through its supervisord: restarts and reloads that lose nothing.

``pystatsd restart receiver`` signals every receiver to restart in place (SIGHUP: its sockets stay
bound, see :mod:`stages.receiver.handover`) and waits until each runs its new image. ``restart
aggregator`` restarts the shards one after the other (each hands its open intervals to its next
instance, see :mod:`stages.aggregator.handoff`), ``restart aggregator-K`` one of them, ``restart
forwarder`` the forwarder (the shards hold their flushes meanwhile). ``pystatsd reload`` sends
every stage SIGHUP: the receivers restart in place with the config as it is now, the forwarder
swaps its sinks from the next flush on, the shards take the new settings from the next interval.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stages import supervisor_rpc
from stages.config import Config
from stages.config_copies import RUNNING, STARTED, load_copy
from stages.config_diff import ON_RELOAD, config_changes, reloadable
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
    for info in sorted(chosen, key=lambda i: (len(i["name"]), i["name"])):
        full = f"{info['group']}:{info['name']}"
        methods = ("stopProcess", "startProcess") if info["statename"] == "RUNNING" else ("startProcess",)
        for method in methods:
            if supervisor_rpc.call(run_dir, method, full, True, timeout=supervisor_rpc.WAIT_TIMEOUT_SECS) is not True:
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
    wait_in_place(run_dir, running, before)
    return [f"{i['name']} restarted in place (pid {i['pid']}, its sockets kept open)" for i in running]


def wait_in_place(run_dir: Path, running: list[dict[str, Any]], before: dict[str, dict[str, Any]]) -> None:
    """Until each of the ``running`` processes publishes figures of a new image under its pid."""
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


def reload(run_dir: Path, new: Config) -> list[str]:
    """SIGHUP to every stage of the instance in ``run_dir``, whose config file now holds ``new``
    (checked by the caller); what changes and what waits for a restart, line by line."""
    lines = describe_reload(run_dir, new)
    infos = processes(run_dir)
    before = read_all(run_dir)
    copy = run_dir / RUNNING
    copied_at = copy.stat().st_mtime_ns if copy.exists() else 0
    if supervisor_rpc.call(run_dir, "signalAllProcesses", "HUP") is None:
        raise OperationError("supervisord did not take the signal for its processes: nothing was reloaded")
    wait_in_place(run_dir, [i for i in infos if i["name"].startswith("receiver") and i["statename"] == "RUNNING"],
                  before)
    deadline = time.monotonic() + IN_PLACE_TIMEOUT_SECS
    while not (copy.exists() and copy.stat().st_mtime_ns != copied_at) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not copy.exists() or copy.stat().st_mtime_ns == copied_at:
        raise OperationError("the forwarder did not take the new config: see its log")
    return [*lines, "reloaded: the receivers restarted in place, the forwarder's sinks apply from the next flush, "
                    "the shards' settings from the next interval"]


def describe_reload(run_dir: Path, new: Config) -> list[str]:
    running, started = load_copy(run_dir, RUNNING), load_copy(run_dir, STARTED)
    if running is None or started is None:
        return ["(no copy of the running config in the run directory: what changes is not shown)"]
    changes = [c for c in config_changes(running, new) if c.applies == ON_RELOAD]
    lines = [f"{c.key}: {c.old} -> {c.new}" for c in changes] or ["no change that a reload applies"]
    lines += [f"{c.key}: {c.old} -> {c.new} (waits for the next pystatsd run)" for c in reloadable(started, new)[1]]
    return lines
