"""What a listener's kind of address offers (inet ``host:port`` or a Unix path): the half of a
listener that is not its transport (datagrams or a stream)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Protocol


class AddressFamily(Protocol):
    #: True when several receivers can listen on the same address with ``SO_REUSEPORT``.
    shares_port: bool

    def parse_address(self, rest: str) -> Any:
        """What follows ``scheme://`` → the address (pure; ValueError says what is wrong)."""

    def bind(self, address: Any, kind: int, url: str, reuse_port: bool, socket_mode: int,
             before_bind: Callable[[socket.socket], None]) -> socket.socket:
        """A socket of ``kind`` bound to ``address``, ``before_bind`` called on it first."""

    def peer(self, sock: socket.socket) -> str:
        """Who is at the other end of the accepted stream ``sock``, as a per-peer connection cap counts peers."""
