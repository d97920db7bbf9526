"""How every listener kind is opened, whatever its transport: a socket of the transport's type bound
to the address by the kind's family, the transport setting what it needs on it before the bind."""

from __future__ import annotations

import socket
from typing import Any, ClassVar, Self

from stages.receiver.listeners.connections import StreamConnections
from stages.receiver.listeners.family import AddressFamily


class BoundListener:
    """The base of both transports (datagram.py, stream.py); a kind of them names its :attr:`family`."""

    family: ClassVar[AddressFamily]
    #: The transport's socket type: ``socket.SOCK_DGRAM`` or ``socket.SOCK_STREAM``.
    socket_type: ClassVar[int]

    @classmethod
    def open(cls, url: str, address: Any, receive_buffer_bytes: int, socket_mode: int, reuse_port: bool,
             streams: StreamConnections) -> Self:
        sock = cls.family.bind(address, cls.socket_type, url, reuse_port, socket_mode,
                               lambda unbound: cls.prepare(unbound, receive_buffer_bytes, url))
        return cls.on_socket(url, sock, streams)

    @classmethod
    def prepare(cls, sock: socket.socket, receive_buffer_bytes: int, url: str) -> None:
        """What the transport sets on its socket before the bind."""
        raise NotImplementedError

    @classmethod
    def on_socket(cls, url: str, sock: socket.socket, streams: StreamConnections) -> Self:
        """The listener on the bound ``sock``."""
        raise NotImplementedError
