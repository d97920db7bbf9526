"""The harness's free ports: under pytest-xdist each worker takes ports of its own class, so two workers
starting servers at once are never handed the same one; and none lies in the kernel's ephemeral range,
where a client's outgoing connection could take it before its server binds it."""

from __future__ import annotations

import socket

import pytest

from harness.ports import WORKER_PORT_CLASSES, ephemeral_range, free_ports


@pytest.mark.parametrize("worker", ["gw0", "gw5", f"gw{WORKER_PORT_CLASSES + 2}"])
def test_a_worker_s_free_ports_are_distinct_and_of_its_class(monkeypatch: pytest.MonkeyPatch, worker: str) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    wanted = int(worker.removeprefix("gw")) % WORKER_PORT_CLASSES
    ports = free_ports(6) + free_ports(6)
    assert len(set(ports)) == 12, "never handed out twice"
    assert {port % WORKER_PORT_CLASSES for port in ports} == {wanted}


def test_outside_pytest_xdist_any_port_will_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert len(set(free_ports(4))) == 4


def test_free_ports_lie_outside_the_ephemeral_range_and_bind_over_tcp_and_udp() -> None:
    ephemeral = ephemeral_range()
    for port in free_ports(8):
        assert port not in ephemeral
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", port))
