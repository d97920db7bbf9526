"""Floods of distinct series for the memory-bound tests: paced, packed as a buffering client packs
them, and the peak memory each process reached."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.pipeline import Pipeline
from harness.proc_status import peak_rss_kib

#: Lines per datagram, as a buffering client sends them: the tests are of many series, not of many
#: datagrams, whose per-datagram cost on a slow shared CI core overflowed the socket's queue.
LINES_PER_DATAGRAM = 25


def send_distinct(pipeline: Pipeline, line: Callable[[int], str], count: int, per_sec: float) -> None:
    """Send ``line(i)`` for i in 0..count-1 to the statsd port, LINES_PER_DATAGRAM a datagram, at ``per_sec``."""
    started = time.monotonic()
    for first in range(0, count, LINES_PER_DATAGRAM):
        pipeline.send("\n".join(line(i) for i in range(first, min(first + LINES_PER_DATAGRAM, count))),
                      pipeline.statsd_port)
        if first % 1000 == 0:
            ahead = started + first / per_sec - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def peak_rss_per_process(pipeline: Pipeline) -> dict[str, int]:
    """Program name → its peak RSS in KiB, for every running process of the pipeline."""
    return {name: peak_rss_kib(pid) for name, (_, pid) in pipeline.status().items() if pid}
