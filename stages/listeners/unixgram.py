"""``unixgram:///path``: a Unix datagram socket (DogStatsD's convention for containers; no UDP loss)."""

from __future__ import annotations

import socket

from stages.listeners.datagram import DatagramListener, set_receive_buffer
from stages.listeners.unix_path import bind_unix, unix_path


class UnixgramListener(DatagramListener):
    parse_address = staticmethod(unix_path)
    #: A path has one owner: the first receiver serves it.
    shares_port = False

    @classmethod
    def open(cls, url: str, address: str, receive_buffer_bytes: int, socket_mode: int,
             reuse_port: bool) -> UnixgramListener:
        sock = bind_unix(address, socket.SOCK_DGRAM, socket_mode, url)
        set_receive_buffer(sock, receive_buffer_bytes, url)
        return cls(url, sock)

    def kernel_drops(self) -> int:
        # A Unix datagram sender blocks (or gets EAGAIN) instead of the kernel dropping silently.
        return 0
