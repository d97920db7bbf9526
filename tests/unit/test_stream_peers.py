"""Who a per-peer connection cap counts as one peer: a TCP client's address, a Unix socket's user."""

from __future__ import annotations

import os
import socket

from stages.receiver.listeners.inet import INET_ADDRESSES
from stages.receiver.listeners.unix_path import UNIX_PATHS


def test_a_unix_stream_peer_is_its_user() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        assert UNIX_PATHS.peer(ours) == f"uid {os.getuid()}"


def test_a_tcp_peer_is_its_address_whatever_its_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port)):
            first, second = server.accept()[0], server.accept()[0]
            with first, second:
                assert INET_ADDRESSES.peer(first) == INET_ADDRESSES.peer(second) == "127.0.0.1"
