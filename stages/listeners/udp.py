"""``udp://host:port``: the statsd convention, and the original daemon's only listener."""

from __future__ import annotations

import logging
import socket

from stages.listeners.datagram import DatagramListener, set_receive_buffer
from stages.listeners.inet import bind_inet, inet_address

log = logging.getLogger(__name__)


class UdpListener(DatagramListener):
    parse_address = staticmethod(inet_address)
    shares_port = True

    @classmethod
    def open(cls, url: str, address: tuple[str, int], receive_buffer_bytes: int, socket_mode: int,
             reuse_port: bool) -> UdpListener:
        sock = bind_inet(address, socket.SOCK_DGRAM, url, reuse_port,
                         before_bind=lambda s: set_receive_buffer(s, receive_buffer_bytes, url))
        return cls(url, sock)
