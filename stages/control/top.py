"""``pystatsd top``: the busiest names (or series counts, or tag values) of a running pipeline, refreshed.

It reads what each shard publishes with its figures once per flush (``busiest``:
stages/aggregator/busiest.py), merges the shards (a name lives on one shard; a tag value's figures add
up over them) and draws a screen each ``--interval``; ``--json`` prints one snapshot for scripts. Each
row's ``metrics_per_s`` (the screen's METRICS/S, the figures' ``rate``) is the metrics the name or tag
value received a second in the shards' last interval: one per value a client sent, whatever its type
or sample rate, as ``pystatsd status`` counts metrics (stages/aggregator/busiest.py). The shards sum
their busiest names only while a top asks (stages.rundir.top_request, which also names the tag K of
``--by tag:K``): the first screen waits for their next flush. A pipeline that is not running is said
so, exit 1; once running, a pipeline that restarts is waited for.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from stages.common.figure_schemas import ShardFigures, figures_of
from stages.common.process_names import AGGREGATOR, is_process_of
from stages.control.status import supervisor_processes
from stages.rundir.figures import read_all
from stages.rundir.top_request import ask

#: Exit status of a top that found no running pipeline.
EXIT_NOT_RUNNING = 1
#: A shard's figures older than this many flush intervals are left out (a shard gone).
STALE_INTERVALS = 3
#: Screen codes: cursor home, clear the screen.
CLEAR = "\x1b[H\x1b[2J"


class TopArgumentError(ValueError):
    """A top option that cannot be read; the message names it."""


def parse_by(text: str) -> tuple[str, str | None]:
    """``name``, ``series`` or ``tag:K``: what the rows are, and K."""
    if text in ("name", "series"):
        return text, None
    if text.startswith("tag:") and len(text) > 4:
        return "tag", text[4:]
    raise TopArgumentError(f"--by: {text!r} is not name, series or tag:K")


def running_shards(run_dir: Path) -> list[str]:
    return sorted(name for name, process in supervisor_processes(run_dir).items()
                  if is_process_of(name, AGGREGATOR) and process["state"] == "RUNNING")


def snapshot(run_dir: Path, by: str, tag_key: str | None, now: float) -> dict[str, Any]:
    """The rows ``by`` asks for, merged over every shard whose figures are fresh, busiest first."""
    shards, interval, limit, updated = 0, 0.0, 0, 0.0
    names: list[dict[str, Any]] = []
    values: dict[str, dict[str, float]] = {}
    for process, record in sorted(read_all(run_dir).items()):
        figures = figures_of(record, ShardFigures) if is_process_of(process, AGGREGATOR) else None
        if figures is None:
            continue
        busiest = figures["busiest"]
        if now - record["updated"] > STALE_INTERVALS * max(busiest["interval"], 1.0):
            continue
        shards += 1
        interval, limit, updated = busiest["interval"], busiest["series_limit"], max(updated, record["updated"])
        names += [{"name": row["name"], "metrics_per_s": row["rate"], "series": row["series"], "folded": row["folded"],
                   "limit_used": round(row["series"] / limit, 4) if limit else 0.0} for row in busiest["names"]]
        for row in busiest["tags"].get(tag_key or "", []):
            total = values.setdefault(row["value"], {"rate": 0.0, "series": 0})
            total["rate"] += row["rate"]
            total["series"] += row["series"]
    rows: list[dict[str, Any]]
    if by == "tag":
        rows = sorted(({"value": value, "metrics_per_s": round(total["rate"], 3), "series": int(total["series"])}
                       for value, total in values.items()), key=lambda r: -r["metrics_per_s"])
    elif by == "series":
        rows = sorted(names, key=lambda r: (-r["series"], -r["folded"], -r["metrics_per_s"]))
    else:
        rows = sorted(names, key=lambda r: (-r["metrics_per_s"], -r["series"]))
    return {"by": f"tag:{tag_key}" if by == "tag" else by, "shards": shards, "interval": interval,
            "series_limit_per_name": limit, "updated": updated or None, "rows": rows}


def render(view: dict[str, Any], run_dir: Path, height: int) -> str:
    """The screen: a heading, then as many rows as fit."""
    updated = datetime.fromtimestamp(view["updated"]).strftime("%H:%M:%S") if view["updated"] else "never"
    lines = [f"pystatsd top  {run_dir}  by {view['by']}  {view['shards']} shards  interval {view['interval']:g} s  "
             f"updated {updated}  (Ctrl-C quits)", ""]
    if view["by"].startswith("tag:"):
        lines.append(f"{'VALUE':<48} {'METRICS/S':>12} {'SERIES':>8}")
        lines += [f"{row['value'][:48]:<48} {row['metrics_per_s']:>12,.1f} {row['series']:>8,}" for row in view["rows"]]
    else:
        lines.append(f"{'NAME':<48} {'METRICS/S':>12} {'SERIES':>8} {'OF LIMIT':>9} {'FOLDED':>8}")
        lines += [f"{row['name'][:48]:<48} {row['metrics_per_s']:>12,.1f} {row['series']:>8,} "
                  f"{row['limit_used']:>9.1%} {row['folded']:>8,}" for row in view["rows"]]
    if not view["rows"]:
        lines.append("(nothing in the last interval)" if view["updated"] and view["shards"]
                     else "(waiting for the shards' next flush)")
    return "\n".join(lines[:max(height - 1, 4)])


def top(run_dir: Path, by: str, tag_key: str | None, refresh: float, as_json: bool, out: TextIO = sys.stdout,
        err: TextIO = sys.stderr, shards: Callable[[Path], list[str]] = running_shards,
        frames: int | None = None) -> int:
    """Draw the view every ``refresh`` seconds until interrupted (or ``frames`` times); one JSON snapshot
    with ``as_json``."""
    if not shards(run_dir):
        print(f"pystatsd top: no aggregator is running with run directory {run_dir} (is the pipeline running? "
              "pystatsd status says)", file=err)
        return EXIT_NOT_RUNNING
    drawn = 0
    started = time.time()
    try:
        while frames is None or drawn < frames:
            now = time.time()
            ask(run_dir, [] if tag_key is None else [tag_key], now + max(refresh, 1.0) * STALE_INTERVALS + 10)
            view = snapshot(run_dir, by, tag_key, now)
            # The shards sum what top shows from their next flush on, while it asks: wait for it, a few
            # intervals at most (figures older than the request may be empty).
            grouped = (view["updated"] or 0) > started
            if not grouped:
                view["rows"] = []
            if as_json and (grouped or now - started > STALE_INTERVALS * max(view["interval"], 1.0)):
                out.write(json.dumps(view) + "\n")
                return 0
            if as_json:
                time.sleep(0.1)  # polling the shards' next figures file
                continue
            out.write(CLEAR + render(view, run_dir, shutil.get_terminal_size().lines) + "\n")
            out.flush()
            drawn += 1
            time.sleep(refresh)  # a refresh period, not a wait for a condition
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0
