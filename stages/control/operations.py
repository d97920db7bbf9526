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

import configparser
import time
from pathlib import Path
from typing import Any

from stages.aggregator.shard import FLUSH_GRACE_SECS
from stages.common import supervisor_rpc
from stages.common.config import Config
from stages.common.config_diff import ON_RELOAD, config_changes, reloadable
from stages.common.intervals import next_edge
from stages.common.lifecycle import FORWARDER_STOP
from stages.common.process_names import AGGREGATOR, RECEIVER, is_process_of, process_name
from stages.control.supervisord_conf import (
    PROGRAMS_FILE,
    PROGRAMS_HEADER,
    RENDERED_IDENTIFIER,
    conf_parser,
    programs_text,
    replace_paths,
)
from stages.forwarder.sinks import sink_sections
from stages.rundir.config_copies import RUNNING, STARTED, load_copy
from stages.rundir.figures import read_all
from stages.rundir.private_file import read_private, write_private
from stages.rundir.ring import Ring, ring_shards, write_ring

#: How long a receiver may take to come back in place before the command calls it failed.
IN_PLACE_TIMEOUT_SECS = 20.0
#: How long new shards may take to run before a reshard gives up (and the old ring runs on).
START_TIMEOUT_SECS = 30.0
#: The ring file is written at least this long before the edge it applies from: every receiver
#: looks at it ten times a second, so each knows well before its first batch of the new ring.
RING_LEAD_SECS = 1.5
#: How long after the old ring's last flush its shards are stopped: stragglers land meanwhile.
RETIRE_AFTER_SECS = 1.0


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
        return restart_receivers(run_dir, [i for i in infos if is_process_of(i["name"], RECEIVER)])
    every_shard = target == "aggregator"
    chosen = [i for i in infos if i["name"] == target or (every_shard and is_process_of(i["name"], AGGREGATOR))]
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
    return [*lines, "reloaded: the receivers restarted in place, the forwarder's sinks apply from the next flush "
                    "(a changed sink delivers first what it held; a removed one gets "
                    f"{FORWARDER_STOP.sink_drain_secs:g} s to deliver it, then what is left is counted as dropped, "
                    "reason removed), the shards' settings from the next interval"]


def describe_reload(run_dir: Path, new: Config) -> list[str]:
    running, started = load_copy(run_dir, RUNNING), load_copy(run_dir, STARTED)
    if running is None or started is None:
        return ["(no copy of the running config in the run directory: what changes is not shown)"]
    changes = [c for c in config_changes(running, new, sink_sections) if c.applies == ON_RELOAD]
    lines = [f"{c.key}: {c.old} -> {c.new}" for c in changes] or ["no change that a reload applies"]
    lines += [f"{c.key}: {c.old} -> {c.new} (waits for the next pystatsd run)" for c in reloadable(started, new)[1]]
    return lines


def reshard(run_dir: Path, shards: int, interval: float) -> list[str]:
    """Change the ring to ``shards`` under traffic: start the new shards, switch the receivers at an
    interval edge, retire the old shards once they flushed their last interval; what was done.

    The new shards' program and the old one's retirement go to the run directory's programs file,
    which the config supervisord runs includes (stages.control.supervisord_conf): that config is not edited."""
    old = [i for i in processes(run_dir) if is_process_of(i["name"], AGGREGATOR)]
    groups = sorted({i["group"] for i in old})
    if len(groups) != 1:
        raise OperationError(f"the shards are in {len(groups)} groups ({', '.join(groups)}): a reshard is under way")
    (old_group,) = groups
    current = ring_shards(run_dir, len(old))
    if shards == current:
        return [f"already {shards} shards: nothing to do"]
    conf = conf_in_force(run_dir)
    programs_path = run_dir / PROGRAMS_FILE
    before = read_private(programs_path).decode() if programs_path.exists() else PROGRAMS_HEADER
    programs = conf_parser(before)
    old_section, new_group = f"program:{old_group}", f"aggregator-of-{shards}"
    source = programs if programs.has_section(old_section) else conf
    if not source.has_section(old_section):
        raise OperationError(f"supervisord runs the group {old_group}, which its config does not define: "
                             f"was it edited since supervisord started?")
    programs[f"program:{new_group}"] = {**source[old_section], "numprocs": str(shards)}
    write_private(programs_path, programs_text(programs).encode())
    if not start_group(run_dir, new_group, shards):
        stop_group(run_dir, new_group)
        write_private(programs_path, before.encode())
        supervisor_rpc.call(run_dir, "reloadConfig")
        raise OperationError(f"the {shards} new shards did not start (see their logs in {run_dir / 'log'}): "
                             f"the {current} shards keep running")
    since = next_edge(time.time() + RING_LEAD_SECS, interval)
    write_ring(run_dir, Ring(shards, since, previous=current))
    # The old ring flushes its last interval at its end plus the grace; what is late after that is
    # flushed by its retiring shards as they stop.
    time.sleep(max(0.0, since + FLUSH_GRACE_SECS + RETIRE_AFTER_SECS - time.time()))
    stop_group(run_dir, old_group)
    if source is programs:
        del programs[old_section]
    else:  # the config's own group, which supervisord merges this into: no process of it starts again
        programs[old_section] = {"numprocs": "0"}
    write_private(programs_path, programs_text(programs).encode())
    supervisor_rpc.call(run_dir, "reloadConfig")
    for stale in range(shards, current):  # figures of shard numbers the new ring has not
        (run_dir / "figures" / f"{process_name(AGGREGATOR, stale)}.json").unlink(missing_ok=True)
    return [f"{shards} shards from {time.strftime('%H:%M:%S', time.localtime(since))} on "
            f"(were {current}); the next start in {run_dir} runs {shards}"]


def conf_in_force(run_dir: Path) -> configparser.RawConfigParser:
    """The config the supervisord of ``run_dir`` runs, its ``%(here)s`` expanded as supervisord does:
    the one pystatsd run wrote there, or the repo's supervisord.conf beside it."""
    if supervisor_rpc.call(run_dir, "getIdentification") == RENDERED_IDENTIFIER:
        return conf_parser(read_private(run_dir / "supervisord.conf").decode())
    path = run_dir.parent / "supervisord.conf"
    if run_dir.name != "run" or not path.exists():
        raise OperationError(f"the supervisord of {run_dir} runs a config pystatsd run did not write, and no "
                             f"supervisord.conf has it as its run/ (the repo's layout): {path} is not there")
    parser = conf_parser(path.read_text(encoding="utf-8"))
    # What the programs file copies must not keep %(here)s: supervisord reads it as that file's directory.
    replace_paths(parser, [("%(here)s", str(path.parent))])
    return parser


def start_group(run_dir: Path, group: str, count: int) -> bool:
    """Add the config's program ``group`` to supervisord and wait until its ``count`` processes run."""
    changes = supervisor_rpc.call(run_dir, "reloadConfig")
    if not changes or group not in changes[0][0]:
        return False
    supervisor_rpc.call(run_dir, "addProcessGroup", group, timeout=supervisor_rpc.WAIT_TIMEOUT_SECS)
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while time.monotonic() < deadline:
        states = [i["statename"] for i in processes(run_dir) if i["group"] == group]
        if len(states) == count and all(state == "RUNNING" for state in states):
            return True
        if any(state in ("FATAL", "BACKOFF", "EXITED") for state in states):
            return False
        time.sleep(0.2)
    return False


def stop_group(run_dir: Path, group: str) -> None:
    supervisor_rpc.call(run_dir, "stopProcessGroup", group, True, timeout=supervisor_rpc.WAIT_TIMEOUT_SECS)
    supervisor_rpc.call(run_dir, "removeProcessGroup", group)
