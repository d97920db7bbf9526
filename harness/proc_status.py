"""Fields of /proc/<pid>/status, for the tests' memory bounds and the benchmark's alike (Linux only)."""

from __future__ import annotations

from pathlib import Path


def status_kib(pid: int | str, field: str) -> int:
    """A KiB field of /proc/<pid>/status (``VmHWM``, ``VmRSS``); pid ``"self"`` is this process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {field} for pid {pid} (kernel thread or zombie?)")


def peak_rss_kib(pid: int) -> int:
    """The most resident memory the process has had (VmHWM), in KiB."""
    return status_kib(pid, "VmHWM")
