"""What the IP listeners (udp, tcp) share: ``host:port`` addresses and binding."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable

from stages.common.addresses import inet_address

log = logging.getLogger(__name__)


class InetAddresses:
    """``host:port``: several receivers may share one (``SO_REUSEPORT``), the kernel spreading clients."""

    shares_port = True

    def parse_address(self, rest: str) -> tuple[str, int]:
        return inet_address(rest)

    def bind(self, address: tuple[str, int], kind: int, url: str, reuse_port: bool, socket_mode: int,
             before_bind: Callable[[socket.socket], None]) -> socket.socket:
        return bind_inet(address, kind, url, reuse_port, before_bind)

    def peer(self, sock: socket.socket) -> str:
        """The client's address (its port changes with every connection it opens)."""
        try:
            return str(sock.getpeername()[0])
        except OSError:  # it reset the connection before it was looked at
            return "unknown"


INET_ADDRESSES = InetAddresses()


def bind_inet(address: tuple[str, int], kind: int, url: str, reuse_port: bool,
              before_bind: Callable[[socket.socket], None] | None = None) -> socket.socket:
    """A socket of ``kind`` bound to ``address``; warns when it accepts traffic from other hosts.

    ``reuse_port`` lets the other receivers of this pipeline bind the same address (only processes
    of the same user can): the kernel then spreads clients over them by source address and port.
    Without it a second bind fails, which is what tells a user that the port is taken.
    """
    host, port = address
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=kind)[0]
    sock = socket.socket(family, kind)
    try:
        if before_bind is not None:
            before_bind(sock)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {url}: {exc.strerror}") from None
    try:
        loopback = ipaddress.ip_address(str(sockaddr[0]).split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        log.warning("%s accepts unauthenticated metrics from the network", url)
    return sock
