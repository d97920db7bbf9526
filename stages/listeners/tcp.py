"""``tcp://host:port``: newline-delimited metrics over TCP connections."""

from __future__ import annotations

import socket

from stages.listeners.inet import bind_inet, inet_address
from stages.listeners.stream import StreamListener


class TcpListener(StreamListener):
    parse_address = staticmethod(inet_address)
    shares_port = True

    @classmethod
    def open(cls, url: str, address: tuple[str, int], receive_buffer_bytes: int, socket_mode: int,
             reuse_port: bool) -> TcpListener:
        sock = bind_inet(address, socket.SOCK_STREAM, url, reuse_port,
                         before_bind=lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1))
        return cls(url, sock)
