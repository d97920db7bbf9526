"""The receiver's burst reader (recvmmsg, in C) gives exactly what one recv per datagram gives."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator

import pytest

from stages.receiver.listeners import datagram
from stages.receiver.listeners.kernel_drops import udp_socket_table
from stages.receiver.listeners.udp import UdpListener

# A datagram of every size that matters: empty, one line, the largest UDP payload over IPv4.
DATAGRAMS = [b"", b"a:1|c", b"x" * 65507, "t\u00e9:1|c".encode(), b"b:2|c\nc:3|ms"]


@pytest.fixture
def udp_pair() -> Iterator[tuple[datagram.DatagramListener, socket.socket]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    listener = UdpListener("udp://127.0.0.1:0", sock)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(listener.sock.getsockname())
    yield listener, sender
    sender.close()
    listener.close()


def send_and_wait(listener: datagram.DatagramListener, sender: socket.socket, payloads: list[bytes]) -> None:
    for payload in payloads:
        sender.send(payload)
    # loopback delivers synchronously, but give the kernel a moment on a busy machine
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not _queued(listener):
        time.sleep(0.01)


def _queued(listener: datagram.DatagramListener) -> bool:
    inode = os.fstat(listener.sock.fileno()).st_ino
    return any(row.inode == inode and row.rx_queue_bytes for row in udp_socket_table())


def test_the_burst_reader_was_built() -> None:
    # make install builds it with the machine's gcc; a missing build would silently cost speed
    assert datagram.recv_many is not None


@pytest.mark.parametrize("reader", ["burst", "each"])
def test_reads_every_datagram_whole_and_in_order(udp_pair, reader: str) -> None:
    listener, sender = udp_pair
    payloads = DATAGRAMS + [f"m{i}:{i}|c".encode() for i in range(300)]
    send_and_wait(listener, sender, payloads)
    read = (lambda limit: listener.read(listener.sock.fileno(), limit, {})) if reader == "burst" \
        else listener.read_each
    got: list[bytes] = []
    while chunk := read(256):
        assert len(chunk) <= 256
        got.extend(chunk)
    assert got == payloads
    assert all(type(payload) is bytes for payload in got)


def test_burst_reader_honours_the_limit_and_leaves_the_rest(udp_pair) -> None:
    listener, sender = udp_pair
    payloads = [f"m{i}:1|c".encode() for i in range(150)]
    send_and_wait(listener, sender, payloads)
    fd = listener.sock.fileno()
    assert listener.read(fd, 70, {}) == payloads[:70]
    assert listener.read_each(10) == payloads[70:80]
    assert listener.read(fd, 1000, {}) == payloads[80:]
    assert listener.read(fd, 1000, {}) == []


def test_burst_reader_raises_what_recv_would_on_a_bad_descriptor() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    with pytest.raises(OSError) as not_a_socket:
        datagram.recv_many(read_end, 10)
    os.close(read_end)
    assert not_a_socket.value.errno == errno.ENOTSOCK
    with pytest.raises(OSError) as closed:
        datagram.recv_many(read_end, 10)
    assert closed.value.errno == errno.EBADF
