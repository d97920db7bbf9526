"""What every system under test is read back as: the counter increments and timer samples it delivered.

The load generator (bench/loadgen.c) names its metrics by kind, ``bench.c…`` counters, ``bench.t…``
timers, ``bench.g…`` gauges and ``bench.s…`` sets, so outputs that do not say a metric's type (Telegraf's,
statsd_exporter's) are read by name. Between runs the benchmark sends one more gauge, the heartbeat,
with a value that grows run by run: once a system has delivered it, it has delivered everything it
took in before it, which tells a run that lost data from one still on its way.
"""

from __future__ import annotations

import json
import re
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
#: A name as the load generator (or the RSS probe) writes it: ``bench.c17``, ``bench.trss3``. Under rules
#: (bench/rules.yaml) a counted item delivered under any other ``bench.`` name was renamed on the way.
GENERATED_NAME = re.compile(r"bench\.[ctgs](?:rss)?[0-9]+")


def underscored(name: str) -> str:
    """A statsd name as Telegraf and statsd_exporter spell it: ``bench.c17`` → ``bench_c17``."""
    return name.replace(".", "_")


@dataclass
class Totals:
    """Cumulative figures of one system; a run is the difference of two readings.

    ``counters`` and ``timer_samples`` are the counter increments and timer samples (each timer
    aggregate's count) of the load's names, ``heartbeat`` the highest heartbeat value delivered.
    ``rule_dropped`` is what the system's rules dropped, as it counted them (pystatsd's
    ``receiver.rule_dropped``: one per line, which is one increment because the rules of the benchmark
    drop only counters of value 1); ``delivered`` includes it: dropped by a rule is dealt with, not lost.
    ``renamed`` is the part of ``counters`` and ``timer_samples`` delivered under a name a rule gave (not
    GENERATED_NAME)."""

    counters: float = 0.0
    timer_samples: float = 0.0
    heartbeat: float = 0.0
    rule_dropped: float = 0.0
    renamed: float = 0.0

    def saw_heartbeat(self, value: float) -> None:
        self.heartbeat = max(self.heartbeat, value)

    @property
    def delivered(self) -> float:
        """What the load's loss is judged on: counter increments plus timer samples, delivered under the
        names the load sent or the names rules gave them, or dropped by a rule and counted."""
        return self.counters + self.timer_samples + self.rule_dropped


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
