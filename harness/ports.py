"""Free loopback ports for what a test or the benchmark starts, and whether one accepts connections."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

#: Port classes of the pytest-xdist workers: worker gwN takes only ports ≡ N modulo this.
WORKER_PORT_CLASSES = 16


def worker_port_class() -> int | None:
    """This process's port class under pytest-xdist (None outside it). A port is free when it is picked,
    and taken when the server it is for binds it: between the two, another worker could be handed the same
    one. Ports of distinct classes never collide."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker.removeprefix("gw")) % WORKER_PORT_CLASSES if worker.startswith("gw") else None


#: Where free ports are looked for below Linux's default ephemeral range, and when the kernel's own
#: range leaves too little room below it.
FALLBACK_PORTS = range(20000, 32768)

#: Ports this process handed out already: not handed out again until half the ports of its class were.
_handed_out: set[int] = set()


def ephemeral_range() -> range:
    """The ports the kernel takes the local end of an outgoing connection from (Linux's default when unread)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def candidate_ports() -> range:
    """Ports below the ephemeral range. A port handed out from inside it could be taken, before its server
    binds it or while the server restarts, by any client's outgoing connection on the machine: a broker
    restarted on its old port found it taken so."""
    ephemeral = ephemeral_range()
    below = range(max(1024, ephemeral.start - len(FALLBACK_PORTS)), ephemeral.start)
    return below if len(below) >= 4096 else FALLBACK_PORTS


def bindable(port: int) -> bool:
    """Whether nothing holds ``port`` on 127.0.0.1, over TCP or UDP."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 over TCP and UDP both, outside the kernel's ephemeral
    range (:func:`candidate_ports`) and of this worker's port class (:func:`worker_port_class`). None was
    handed out by this process before, until most of its class was."""
    wanted = worker_port_class()
    pool = [port for port in candidate_ports() if wanted is None or port % WORKER_PORT_CLASSES == wanted]
    if len(_handed_out.intersection(pool)) > len(pool) // 2:
        _handed_out.difference_update(pool)
    fresh = [port for port in pool if port not in _handed_out]
    random.shuffle(fresh)
    ports: list[int] = []
    for port in fresh:
        if bindable(port):
            ports.append(port)
            _handed_out.add(port)
            if len(ports) == count:
                return ports
    raise OSError(f"no {count} free ports on 127.0.0.1 among {len(fresh)} candidates")


def free_port() -> int:
    """One free port (:func:`free_ports`), for TCP or UDP."""
    return free_ports(1)[0]


def accepts_tcp(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
