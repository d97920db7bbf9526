"""Listener kinds by URL scheme. A new kind is a file plus an entry here (and its scheme's address
parser in :data:`stages.common.addresses.LISTENER_ADDRESSES`, which the config checks URLs with).

A kind is a transport (:class:`~stages.receiver.listeners.datagram.DatagramListener` or
:class:`~stages.receiver.listeners.stream.StreamListener`) with a ``family`` of addresses
(:class:`~stages.receiver.listeners.family.AddressFamily`: how the address is parsed and bound, whether
receivers share it), opened by ``open(url, address, receive_buffer_bytes, socket_mode, reuse_port, streams)``
(``streams``: the receiver's :class:`~stages.receiver.listeners.connections.StreamConnections`, its rules and
counts for connections); an opened listener offers ``fds()``,
``read(fd, limit, bad)`` → payloads to parse, ``release()`` (what it holds in memory, before a
restart in place), ``next_expiry()`` (seconds until an idle connection is
due to close, or None) and ``expire(bad)`` → what the connections it closed sent last, ``drain(bad)``,
``kernel_drops()``, ``close()`` and a ``changed`` flag for when its set of sockets changed.
"""

from __future__ import annotations

from typing import Any

from stages.common.addresses import parse_listener
from stages.receiver.listeners.connections import StreamConnections
from stages.receiver.listeners.tcp import TcpListener
from stages.receiver.listeners.udp import UdpListener
from stages.receiver.listeners.unix import UnixStreamListener
from stages.receiver.listeners.unixgram import UnixgramListener

LISTENERS: dict[str, Any] = {
    "udp": UdpListener,
    "tcp": TcpListener,
    "unixgram": UnixgramListener,
    "unix": UnixStreamListener,
}


def open_listener(url: str, receive_buffer_bytes: int, socket_mode: int, streams: StreamConnections,
                  reuse_port: bool = False) -> Any:
    """Bind the listener ``url`` names; with ``reuse_port`` other receivers may bind it too."""
    scheme, address = parse_listener(url)
    return LISTENERS[scheme].open(url, address, receive_buffer_bytes, socket_mode, reuse_port, streams)


def adopt_listener(url: str, held: dict[str, Any], receive_buffer_bytes: int, streams: StreamConnections) -> Any:
    """The listener ``url`` that a previous receiver of this process handed over (``hand_over()``)."""
    return LISTENERS[parse_listener(url)[0]].adopt(url, held, receive_buffer_bytes, streams)


def shares_port(url: str) -> bool:
    """Whether several receivers can listen on ``url`` at once (the kernel spreads the clients)."""
    return bool(LISTENERS[parse_listener(url)[0]].family.shares_port)
