"""What every system under test is read back as: the counter increments and timer samples it delivered.

The load generator (bench/loadgen.c) names its metrics by kind, ``bench.c…`` counters, ``bench.t…``
timers, ``bench.g…`` gauges and ``bench.s…`` sets, so outputs that do not say a metric's type (Telegraf's,
statsd_exporter's) are read by name. Between runs the benchmark sends one more gauge, the heartbeat,
with a value that grows run by run: once a system has delivered it, it has delivered everything it
took in before it, which tells a run that lost data from one still on its way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Every metric the load generator and the RSS probe send is named ``bench.*``.
LOAD_PREFIX = "bench."
COUNTER_PREFIX = f"{LOAD_PREFIX}c"
TIMER_PREFIX = f"{LOAD_PREFIX}t"
#: Outside LOAD_PREFIX, so that no system counts it as load.
HEARTBEAT = "benchctl.heartbeat"


def underscored(name: str) -> str:
    """A statsd name as Telegraf and statsd_exporter spell it: ``bench.c17`` → ``bench_c17``."""
    return name.replace(".", "_")


@dataclass
class Totals:
    """Cumulative figures of one system; a run is the difference of two readings."""

    #: counter increments of the load's names
    counters: float = 0.0
    #: timer samples of the load's names (each timer aggregate's count)
    timer_samples: float = 0.0
    #: the highest heartbeat value delivered
    heartbeat: float = 0.0

    def saw_heartbeat(self, value: float) -> None:
        self.heartbeat = max(self.heartbeat, value)

    @property
    def delivered(self) -> float:
        """What the load's loss is judged on: counter increments plus timer samples."""
        return self.counters + self.timer_samples


class JsonLinesTail:
    """Reads a growing JSON-lines file from where it left off, handing every record to ``add``, so a long
    sweep never re-reads it."""

    def __init__(self, path: Path, add: Callable[[dict[str, Any]], None]) -> None:
        self.path = path
        self.add = add
        self.offset = 0

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        for line in complete.splitlines():
            if line:
                self.add(json.loads(line))
