"""The unixgram listener's reader thread (drain.c): every datagram whole and in order, its wake fd
readable exactly while some wait, nothing held lost at a stop, and a full buffer left to the kernel
(which then refuses the sender: visible, never silent)."""

from __future__ import annotations

import select
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.wait import wait_for
from stages.receiver.listeners import unixgram
from stages.receiver.listeners.unixgram import UnixgramListener


def readable(fd: int, timeout_ms: int = 0) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout_ms))


@pytest.fixture
def pair() -> Iterator[tuple[UnixgramListener, socket.socket]]:
    # A bound path, as clients use it: the kernel's queue limit spares a socketpair's own peer.
    folder = Path(tempfile.mkdtemp(prefix="psu"))
    receiving = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiving.bind(str(folder / "s"))
    listener = UnixgramListener("unixgram:///test", receiving)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(str(folder / "s"))
    sender.setblocking(False)
    yield listener, sender
    sender.close()
    listener.close()
    shutil.rmtree(folder)


def test_the_reader_thread_was_built() -> None:
    # make install builds it with the machine's gcc; without it bursts of non-blocking senders are refused
    assert unixgram.READER_THREAD


def test_reads_every_datagram_whole_in_order_and_wakes_only_while_some_wait(pair) -> None:
    listener, sender = pair
    (wake,) = listener.fds()
    assert not readable(wake)
    # More than the kernel's queue holds (max_dgram_qlen, 10 by default): the thread empties it meanwhile.
    payloads = [b"", b"x" * 65536] + [f"m{i}:{i}|c".encode() for i in range(300)]
    for payload in payloads:
        wait_for(lambda payload=payload: try_send(sender, payload), 5, "room in the socket's queue", every=0.001)
    got: list[bytes] = []
    while len(got) < len(payloads):
        assert readable(wake, 5000)
        chunk = listener.read(wake, 100, {})
        assert len(chunk) <= 100
        got.extend(chunk)
    assert got == payloads
    assert not readable(wake)
    sender.send(b"late:1|c")
    assert readable(wake, 5000)
    assert listener.read(wake, 100, {}) == [b"late:1|c"]


def try_send(sender: socket.socket, payload: bytes) -> bool:
    try:
        sender.send(payload)
    except BlockingIOError:
        return False
    return True


def test_release_hands_over_what_the_thread_held_and_leaves_the_rest_to_the_kernel(pair) -> None:
    listener, sender = pair
    (wake,) = listener.fds()
    sender.send(b"held:1|c")
    assert readable(wake, 5000)
    assert listener.release() == [b"held:1|c"]
    sender.send(b"queued:1|c")  # no thread reads now: it waits in the kernel for the next reader
    assert listener.fds() == [listener.sock.fileno()]
    assert listener.drain({}) == [b"queued:1|c"]


def test_a_full_buffer_is_left_to_the_kernel_which_refuses_the_sender(pair, monkeypatch) -> None:
    listener, sender = pair
    listener.release()
    monkeypatch.setattr(unixgram, "HELD_BYTES", 1000)
    small = UnixgramListener("unixgram:///small", listener.sock)
    (wake,) = small.fds()
    outcomes = [try_send(sender, b"y" * 100) for _ in range(200)]
    # The thread holds about 1000 bytes (plus one read), the kernel its queue; the rest is refused.
    assert outcomes.count(False) > 0
    got: list[bytes] = []
    while readable(wake, 200):
        got.extend(small.read(wake, 1000, {}))
    got.extend(small.drain({}))
    assert got == [b"y" * 100] * outcomes.count(True)


def test_without_the_reader_thread_the_receiver_reads_the_socket_itself(pair, monkeypatch) -> None:
    listener, sender = pair
    listener.release()
    monkeypatch.setattr(unixgram, "READER_THREAD", False)
    plain = UnixgramListener("unixgram:///plain", listener.sock)
    assert plain.fds() == [plain.sock.fileno()]
    sender.send(b"a:1|c")
    sender.send(b"b:1|c")
    assert readable(plain.sock.fileno(), 5000)
    assert plain.read(plain.sock.fileno(), 100, {}) == [b"a:1|c", b"b:1|c"]
    assert plain.release() == []
