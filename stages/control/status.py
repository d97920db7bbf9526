"""A running instance's state at a glance: supervisord's view of each process plus each stage's figures.

Used by ``pystatsd status`` (a table, or ``--json``); what counts as healthy is
:mod:`stages.common.health_check`'s, which the forwarder's health endpoint answers by too. It reads only
the run directory: supervisord's control socket and the figures the stages publish there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stages.common import supervisor_rpc
from stages.common.figure_schemas import (
    FleetFigures,
    ForwarderFigures,
    ReceiverFigures,
    ShardFigures,
    SinkFigures,
    figures_of,
)
from stages.common.health_check import health, sinks_of
from stages.rundir.figures import START_ERROR, read_all


def supervisor_processes(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Process name → state, pid and uptime, from supervisord's socket in ``run_dir``; empty if it is down."""
    infos = supervisor_rpc.call(run_dir, "getAllProcessInfo")
    if not isinstance(infos, list):
        return {}
    return {info["name"]: {"state": info["statename"], "pid": info["pid"] or None,
                           "uptime_secs": max(0, info["now"] - info["start"]) if info["pid"] else 0,
                           "exit_status": info["exitstatus"], "description": info["description"]}
            for info in infos}


#: supervisord's states of a process that does not run and is not about to.
NOT_RUNNING = ("FATAL", "EXITED", "STOPPED", "BACKOFF")


def process_reasons(processes: dict[str, dict[str, Any]], records: dict[str, dict[str, Any]]) -> list[str]:
    """Why the processes that do not run are not healthy, where the stage's own start error does not say."""
    reasons = []
    for name, process in sorted(processes.items(), key=lambda item: stage_order(item[0])):
        if process["state"] in NOT_RUNNING and START_ERROR not in records.get(name, {}).get("figures", {}):
            reasons.append(f"{name}: {process['state']} (exit status {process['exit_status']}: "
                           f"{process['description'] or 'see its log'})")
    return reasons


def collect(run_dir: Path, shards: int, interval: float) -> dict[str, Any]:
    """Everything ``pystatsd status`` shows, as plain data."""
    records = read_all(run_dir)
    processes = supervisor_processes(run_dir)
    reasons = process_reasons(processes, records) + health(records, shards, interval)
    if not processes:
        reasons.insert(0, f"supervisord is not running with run directory {run_dir}")
    return {"run_dir": str(run_dir), "healthy": not reasons, "reasons": reasons, "processes": processes,
            "stages": records}


def render(report: dict[str, Any], now: float | None = None) -> str:
    """The report as a table a person reads at a glance."""
    now = time.time() if now is None else now
    lines = [f"pystatsd at {report['run_dir']}: {'healthy' if report['healthy'] else 'UNHEALTHY'}"]
    lines += [f"  ! {reason}" for reason in report["reasons"]]
    rows: list[tuple[str, ...]] = [("PROCESS", "STATE", "PID", "UPTIME", "UPDATED", "FIGURES")]
    stages = report["stages"]
    names = sorted(set(report["processes"]) | set(stages), key=stage_order)
    for name in names:
        process = report["processes"].get(name, {})
        record = stages.get(name)
        uptime = process.get("uptime_secs")
        rows.append((name, process.get("state", "?"), str(process.get("pid") or "-"),
                     _duration(uptime) if uptime else "-",
                     f"{now - record['updated']:.0f} s ago" if record else "never",
                     _summary(record) if record else ""))
    lines += _table(rows)
    sinks = sinks_of(stages)
    if sinks:
        sink_rows: list[tuple[str, ...]] = [("SINK", "DELIVERED", "WAITING", "DROPPED", "ERRORS", "STATE")]
        for sink, figures in sorted(sinks.items()):
            sink_rows.append((sink, f"{figures['delivered']:,}", f"{figures['waiting']:,}",
                              _by_reason(figures["dropped"]), f"{figures['errors']:,}", _sink_state(figures)))
        lines += [""] + _table(sink_rows)
    return "\n".join(lines)


def _by_reason(counts: dict[str, int]) -> str:
    """A total and, when it is not 0, what it is made of: ``69 (removed=69)``."""
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total:,} ({', '.join(f'{reason}={n:,}' for reason, n in sorted(counts.items()) if n)})"


def _sink_state(figures: SinkFigures) -> str:
    """ok, failing (and why), or removed by a reload (still draining what it held while ``waiting``)."""
    state = f"failing: {figures['failing']}" if figures.get("failing") else "ok"
    if figures.get("removed"):
        return f"removed, draining ({state})" if figures["waiting"] else "removed"
    return state


def stage_order(name: str) -> tuple[int, str]:
    for rank, prefix in enumerate(("receiver", "aggregator", "forwarder")):
        if name.startswith(prefix):
            return rank, name
    return 3, name


def _summary(record: dict[str, Any]) -> str:
    """The figures a person looks for first, one short phrase each, as the record's schema declares them."""
    receiver = figures_of(record, ReceiverFigures)
    if receiver is not None:
        return _receiver_summary(receiver)
    shard = figures_of(record, ShardFigures)
    if shard is not None:
        return _counts(metrics=shard["metrics"], aggregates=shard["aggregates"], gauges=shard["gauges"],
                       held_flushes=shard["held_flushes"])
    fleet = figures_of(record, FleetFigures)
    if fleet is not None:
        return _fleet_summary(fleet)
    forwarder = figures_of(record, ForwarderFigures)
    if forwarder is not None:
        return _counts(lost_metrics=forwarder["lost_metrics"], lost_flushes=forwarder["lost_flushes"])
    return ""


def _counts(**counts: int) -> str:
    return "  ".join(f"{key} {n:,}" for key, n in counts.items())


def _receiver_summary(figures: ReceiverFigures) -> str:
    parts = [f"datagrams {figures['datagrams']:,}", f"metrics {figures['metrics']:,}",
             f"kernel_drops {figures['kernel_drops']:,}"]
    if figures["bad_lines"]:
        # By reason too, as the log's summary says them: the total alone does not say what to fix.
        parts.append(f"bad_lines {_by_reason(figures['bad_lines'])}")
    if figures["dropped_shard_full"]:
        parts.append(f"dropped_shard_full {sum(figures['dropped_shard_full'].values()):,}")
    if figures["rule_dropped"]:
        parts.append(f"rule_dropped {figures['rule_dropped']:,}")
    for destination, relayed in figures["relay"].items():
        # Each destination of the raw relay: what went, and what did not, by reason.
        parts.append(f"relay {destination} {relayed['datagrams']:,} datagrams, dropped lines "
                     f"{_by_reason(relayed['dropped'])}")
    if figures["connections"] or figures["connections_refused"] or figures["connections_closed"]:
        # Stream listeners only: how many clients hold a connection, and whom the limits turned away or closed.
        parts.append(f"connections {figures['connections']:,}")
        for key, by_reason in (("connections_refused", figures["connections_refused"]),
                               ("connections_closed", figures["connections_closed"])):
            if by_reason:
                parts.append(f"{key} {_by_reason(by_reason)}")
    return "  ".join(parts)


def _fleet_summary(figures: FleetFigures) -> str:
    """A fleet-tier shard: what it owns, how far behind it is, and who it hears from."""
    parts = [f"partitions {','.join(map(str, figures['partitions'])) or 'none'}",
             f"lag {figures['lag']:,}", f"open_intervals {figures['open_intervals']:,}",
             f"intervals_closed {figures['intervals_closed']:,}", f"partials {figures['partials']:,}",
             f"hosts {len(figures['hosts'])}"]
    if figures["hosts_gone"]:
        parts.append(f"hosts_gone {','.join(figures['hosts_gone'])}")
    late = figures["late_partials"]
    if late:
        by_host = ", ".join(f"{host}={n:,}" for host, n in sorted(late.items()))
        parts.append(f"late_partials {sum(late.values()):,} ({by_host})")
    return "  ".join(parts)


def _duration(secs: int) -> str:
    hours, rest = divmod(int(secs), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
