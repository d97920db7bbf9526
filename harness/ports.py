"""Free loopback ports for what a test or the benchmark starts, and whether one accepts connections."""

from __future__ import annotations

import os
import socket

#: Port classes of the pytest-xdist workers: worker gwN takes only ports ≡ N modulo this.
WORKER_PORT_CLASSES = 16


def worker_port_class() -> int | None:
    """This process's port class under pytest-xdist (None outside it). A port is free when it is picked,
    and taken when the server it is for binds it: between the two, another worker could be handed the same
    one. Ports of distinct classes never collide."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker.removeprefix("gw")) % WORKER_PORT_CLASSES if worker.startswith("gw") else None


def free_ports(count: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """``count`` distinct ports the kernel just handed out on 127.0.0.1 (TCP, or UDP with SOCK_DGRAM), of
    this worker's port class (:func:`worker_port_class`).

    All are held open until the last is bound, so none is handed out twice.
    """
    wanted = worker_port_class()
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, kind)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if wanted is None or port % WORKER_PORT_CLASSES == wanted:
                ports.append(port)
        return ports
    finally:
        for sock in sockets:
            sock.close()


def free_udp_port() -> int:
    return free_ports(1, socket.SOCK_DGRAM)[0]


def free_tcp_port() -> int:
    return free_ports(1, socket.SOCK_STREAM)[0]


def accepts_tcp(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
