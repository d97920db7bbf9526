"""Process and UDP socket accounting read straight from /proc (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_UDP_TABLES = (Path("/proc/net/udp"), Path("/proc/net/udp6"))


class UdpSocket(NamedTuple):
    """One row of /proc/net/udp{,6}."""

    local_port: int
    rx_queue: int  # bytes waiting in the receive buffer
    drops: int  # datagrams dropped because the receive buffer was full
    inode: int


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of pid in clock ticks (all its threads, reaped children excluded)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may contain spaces and parentheses; fields resume after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid (all its threads, reaped children excluded)."""
    return sum(_cpu_ticks(pid)) / _CLK_TCK


def user_cpu_seconds(pid: int) -> float:
    """User-mode CPU time of pid (all its threads)."""
    return _cpu_ticks(pid)[0] / _CLK_TCK


def _parse_udp_row(line: str) -> UdpSocket:
    cols = line.split()
    queues = cols[4].split(":")
    return UdpSocket(
        local_port=int(cols[1].rsplit(":", 1)[1], 16),
        rx_queue=int(queues[1], 16),
        drops=int(cols[-1]),
        inode=int(cols[9]),
    )


def udp_sockets(port: int) -> list[UdpSocket]:
    """All IPv4 and IPv6 UDP sockets whose local port is port."""
    found = []
    for table in _UDP_TABLES:
        if not table.exists():  # IPv6 may be disabled
            continue
        for line in table.read_text().splitlines()[1:]:
            sock = _parse_udp_row(line)
            if sock.local_port == port:
                found.append(sock)
    return found


def udp_drops(port: int) -> int:
    """Receive-buffer drops summed over every socket bound to port (SO_REUSEPORT groups)."""
    return sum(s.drops for s in udp_sockets(port))


def udp_rx_queue(port: int) -> int:
    """Bytes still queued, unread, on the sockets bound to port."""
    return sum(s.rx_queue for s in udp_sockets(port))


def udp_noports() -> int:
    """System-wide count of UDP datagrams that arrived for a port nobody had bound."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    header, values = rows[0], rows[1]
    return int(values[header.index("NoPorts")])


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets pid has open, to tell its sockets from other processes'."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # fd closed while we were listing
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def cores_user_seconds(cpus: list[int]) -> float:
    """User-mode time (user + nice) the given cores spent, over every process.

    Compared with the user time of the processes one started, it shows what other processes took.
    User time only: kernel threads (kworker, ksoftirqd) do work the measured processes cause too.
    """
    wanted = {f"cpu{cpu}" for cpu in cpus}
    ticks = 0
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            ticks += int(fields[1]) + int(fields[2])
    return ticks / _CLK_TCK
