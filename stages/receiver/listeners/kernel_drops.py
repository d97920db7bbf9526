"""Datagrams the kernel dropped on our UDP sockets because their receive buffer was full.

Counting what ``recv`` returns cannot see these; the ``drops`` column of ``/proc/net/udp`` and
``/proc/net/udp6`` can, per socket (found by its inode).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

UDP_TABLES = (Path("/proc/net/udp"), Path("/proc/net/udp6"))


@dataclass(frozen=True)
class UdpSocketRow:
    """One row of /proc/net/udp{,6}."""

    local_port: int
    rx_queue_bytes: int
    inode: int
    drops: int


def udp_socket_table(pid: int | None = None) -> list[UdpSocketRow]:
    """Every UDP socket the kernel lists, IPv4 and IPv6, in this process's network namespace (or in
    ``pid``'s); empty where /proc is not there."""
    rows = []
    tables = UDP_TABLES if pid is None else tuple(Path(f"/proc/{pid}/net") / table.name for table in UDP_TABLES)
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local rem st tx_queue:rx_queue tr:tm retrnsmt uid timeout inode ref pointer drops
            if len(fields) < 13:
                continue
            rows.append(UdpSocketRow(local_port=int(fields[1].rsplit(":", 1)[1], 16),
                                     rx_queue_bytes=int(fields[4].split(":")[1], 16),
                                     inode=int(fields[9]), drops=int(fields[12])))
    return rows


def socket_drops(sockets: list[socket.socket]) -> int:
    """Datagrams the kernel has dropped so far on these sockets."""
    inodes = {os.fstat(sock.fileno()).st_ino for sock in sockets}
    return sum(row.drops for row in udp_socket_table() if row.inode in inodes)
