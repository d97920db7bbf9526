"""``unixgram:///path``: a Unix datagram socket (DogStatsD's convention for containers).

Unlike UDP, the kernel never drops a datagram it accepted for the socket; but it queues at most
``net.unix.max_dgram_qlen`` of them (10 by default), whatever the receive buffer. Past that a
blocking sender waits and a non-blocking one (the datadog client by default) gets EAGAIN: what it
cannot send is lost, and counted, on the sender's side. So a reader thread (``_drain``, in C,
without the GIL) moves datagrams from that short queue into memory while the receiver works (and
pauses to let UDP gather a burst), and the receiver takes them from there.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from stages.receiver.listeners.datagram import DatagramListener
from stages.receiver.listeners.unix_path import UNIX_PATHS

try:
    from stages.receiver.listeners import _drain
    READER_THREAD = True
except ImportError:  # built by pip install where a C compiler is found
    READER_THREAD = False

log = logging.getLogger(__name__)

#: Per network namespace: the value of the namespace the receiver runs in.
DGRAM_QLEN_PATH = Path("/proc/sys/net/unix/max_dgram_qlen")
#: Below this the start-up log warns that a non-blocking sender's bursts may be refused.
RECOMMENDED_DGRAM_QLEN = 1024
#: Bytes of datagrams the reader thread holds for the receiver before it leaves them to the kernel.
HELD_BYTES = 8 * 1024 * 1024


def dgram_queue_limit() -> int | None:
    """``net.unix.max_dgram_qlen`` of this network namespace, or None where /proc does not say."""
    try:
        return int(DGRAM_QLEN_PATH.read_text())
    except (OSError, ValueError):
        return None


def warn_if_queue_short(url: str) -> None:
    limit = dgram_queue_limit()
    if limit is not None and limit < RECOMMENDED_DGRAM_QLEN:
        log.warning("%s: the kernel queues at most %d datagrams for it (net.unix.max_dgram_qlen); a "
                    "non-blocking sender (the datadog client by default) that outruns the reader gets "
                    "EAGAIN and drops the rest of its burst, counted only on its side. Raise it as root "
                    "in this network namespace: sysctl -w net.unix.max_dgram_qlen=%d (a file in "
                    "/etc/sysctl.d/ keeps it across boots)", url, limit, RECOMMENDED_DGRAM_QLEN)


class UnixgramListener(DatagramListener):
    family = UNIX_PATHS

    @classmethod
    def prepare(cls, sock: socket.socket, receive_buffer_bytes: int, url: str) -> None:
        # The kernel bounds this socket's queue by count (max_dgram_qlen), not by its receive buffer
        # (11 datagrams of 4000 bytes queue on a 2304-byte one): asking for one, and logging that
        # net.core.rmem_max should be raised for it, would only mislead.
        return

    def __init__(self, url: str, sock: socket.socket) -> None:
        super().__init__(url, sock)
        warn_if_queue_short(url)
        self.reader: _drain.Handle | None = _drain.start(sock.fileno(), HELD_BYTES) if READER_THREAD else None
        if self.reader is None:
            log.warning("Reading %s from the receiver's loop, which is away from it for a millisecond at "
                        "times: the reader thread was not built when pystatsd was installed (no C "
                        "compiler), so a burst from a non-blocking sender is likely to be refused", url)
        elif not _drain.realtime(self.reader):
            log.info("Reading %s with a reader thread of ordinary priority (SCHED_FIFO needs root or "
                     "CAP_SYS_NICE): a burst from a non-blocking sender is more likely to be refused", url)

    def fds(self) -> list[int]:
        return super().fds() if self.reader is None else [_drain.wake_fd(self.reader)]

    def read(self, fd: int, limit: int, bad: dict[str, int]) -> list[bytes]:
        if self.reader is None:
            return super().read(fd, limit, bad)
        return _drain.take(self.reader, limit)

    def release(self) -> list[bytes]:
        """Stop the reader thread: what it held, for the receiver (what it had not read stays queued
        in the kernel). Before a planned stop or a restart in place."""
        if self.reader is None:
            return []
        reader, self.reader = self.reader, None
        _drain.stop(reader)
        held: list[bytes] = []
        while burst := _drain.take(reader, 4096):
            held.extend(burst)
        return held

    def drain(self, bad: dict[str, int]) -> list[bytes]:
        return self.release() + super().drain(bad)

    def hand_over(self) -> dict[str, Any]:
        if self.reader is not None:
            raise RuntimeError(f"{self.url}: release() what the reader thread holds before the hand-over")
        return super().hand_over()

    def close(self) -> None:
        self.release()  # the thread must end before its socket does; the receiver released it first
        super().close()

    def kernel_drops(self) -> int:
        # The kernel refuses a datagram to the sender (it blocks or gets EAGAIN) instead of dropping it.
        return 0
