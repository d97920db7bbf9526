"""Whether the addresses a pipeline is about to serve on are free, and who holds one that is not.

``pystatsd run`` asks before it starts anything, so a port another program holds is one line naming
the address and its holder, exit 78, instead of a stage that starts and fails under supervisord.
Each address is probed as its stage binds it, then let go at once. The holder is found in
``/proc``: the socket's inode in ``/proc/net/*``, then the process with a descriptor on it (only
this user's processes, unless root).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from stages.common.addresses import inet_address, live_unix_socket, parse_listener

#: The table in /proc/net of each kind of socket a listener URL names.
PROC_TABLES = {"udp": ("udp", "udp6"), "tcp": ("tcp", "tcp6")}
#: /proc/net/tcp's state of a listening socket.
TCP_LISTEN = "0A"
#: How much of a holder's command line a message shows.
COMMAND_CHARS = 100


def address_problems(urls: list[str]) -> list[str]:
    """One line for each of ``urls`` (listener URLs, as ``udp://host:port``) that cannot be served on now."""
    problems = []
    for url in urls:
        scheme, address = parse_listener(url)
        problem = _unix_problem(address, scheme) if scheme.startswith("unix") else _inet_problem(address, scheme)
        if problem:
            problems.append(f"{url}: {problem}")
    return problems


def tcp_url(host_port: str) -> str:
    """The listener URL of a TCP ``host:port`` another stage serves on (the health endpoint, a scrape)."""
    host, port = inet_address(host_port)
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def _inet_problem(address: tuple[str, int], scheme: str) -> str | None:
    host, port = address
    kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=kind)[0]
    except OSError as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    probe = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # As the TCP listeners bind: a port whose last connections sit in TIME_WAIT is free to them.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(sockaddr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"address already in use{_held_by(_inet_inodes(scheme, port))}"
        return str(exc.strerror)
    finally:
        probe.close()
    return None


def _unix_problem(path: str, scheme: str) -> str | None:
    kind = socket.SOCK_DGRAM if scheme == "unixgram" else socket.SOCK_STREAM
    if live_unix_socket(path, kind):
        return f"a live socket is there{_held_by(_unix_inodes(path))}"
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        return f"no folder {folder} to make the socket in"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot make a socket in {folder}: permission denied"
    return None


def _inet_inodes(scheme: str, port: int) -> set[str]:
    inodes = set()
    for table in PROC_TABLES[scheme]:
        for fields in _proc_rows(Path("/proc/net") / table):
            if int(fields[1].rsplit(":", 1)[1], 16) == port and (scheme == "udp" or fields[3] == TCP_LISTEN):
                inodes.add(fields[9])
    return inodes


def _unix_inodes(path: str) -> set[str]:
    return {fields[6] for fields in _proc_rows(Path("/proc/net/unix")) if len(fields) > 7 and fields[7] == path}


def _proc_rows(table: Path) -> list[list[str]]:
    try:
        return [line.split() for line in table.read_text().splitlines()[1:]]
    except OSError:
        return []


def _held_by(inodes: set[str]) -> str:
    """`` (held by pid N: command)`` for the processes holding a socket of ``inodes``; "" when none is seen."""
    if not inodes:
        return ""
    targets = {f"socket:[{inode}]" for inode in inodes}
    holders = []
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in targets for fd in fds):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                holders.append(f"pid {pid}: {command.strip()[:COMMAND_CHARS]}")
        except OSError:  # gone meanwhile, or another user's
            continue
    return f" (held by {'; '.join(holders)})" if holders else ""
