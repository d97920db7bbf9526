"""The harness's free ports: under pytest-xdist each worker takes ports of its own class, so two workers
starting servers at once are never handed the same one."""

from __future__ import annotations

import socket

import pytest

from harness.ports import WORKER_PORT_CLASSES, free_ports


@pytest.mark.parametrize("worker", ["gw0", "gw5", f"gw{WORKER_PORT_CLASSES + 2}"])
def test_a_worker_s_free_ports_are_distinct_and_of_its_class(monkeypatch: pytest.MonkeyPatch, worker: str) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    wanted = int(worker.removeprefix("gw")) % WORKER_PORT_CLASSES
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        ports = free_ports(6, kind)
        assert len(set(ports)) == 6
        assert {port % WORKER_PORT_CLASSES for port in ports} == {wanted}


def test_outside_pytest_xdist_any_port_will_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert len(set(free_ports(4))) == 4
