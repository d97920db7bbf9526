"""The address grammar every part reads: ``host:port``, Unix socket paths, listener URLs.

The config checks its listeners and ``health_address`` with it, the command checks the addresses
it will serve on, the receiver's listeners bind what it parses. Which scheme takes which address is
:data:`LISTENER_ADDRESSES`; the receiver's registry (:mod:`stages.receiver.listeners`) has a kind for
each scheme here, and a test holds the two to the same schemes.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from typing import Any

from pystatsd.ports import PORTS


def inet_address(rest: str) -> tuple[str, int]:
    """``host:port`` → (host, port); ``[::1]:8125`` for IPv6. ValueError says what is wrong."""
    host, colon, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or int(port) not in PORTS:
        raise ValueError(f"expected host:port with a port from {PORTS[0]} to {PORTS[-1]}")
    return host, int(port)


def unix_path(rest: str) -> str:
    """``/path`` (from ``unix:///path``) → the path; it must be absolute."""
    if not rest.startswith("/") or len(rest) > 100:
        raise ValueError("expected an absolute socket path of at most 100 characters, as in unix:///run/x.sock")
    return rest


#: Listener URL scheme → the parser of what follows ``scheme://``.
LISTENER_ADDRESSES: dict[str, Callable[[str], Any]] = {
    "udp": inet_address,
    "tcp": inet_address,
    "unixgram": unix_path,
    "unix": unix_path,
}


def parse_listener(url: str) -> tuple[str, Any]:
    """``scheme://rest`` → (scheme, address); ValueError names the URL and what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    parse = LISTENER_ADDRESSES.get(scheme)
    if not sep or parse is None:
        raise ValueError(f"{url!r} is not a listener URL (one of {', '.join(f'{s}://' for s in LISTENER_ADDRESSES)})")
    try:
        return scheme, parse(rest)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None


def loopback_if_any(address: str) -> str:
    """Where to reach a daemon bound to ``address``: a wildcard bind is reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address, address)


def parse_relay(url: str) -> tuple[str, int]:
    """A raw relay destination, ``udp://host:port`` → (host, port); ValueError names the URL."""
    scheme, sep, rest = url.partition("://")
    if scheme != "udp" or not sep:
        raise ValueError(f"{url!r}: the relay sends UDP only: expected udp://host:port")
    try:
        return inet_address(rest)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None


def live_unix_socket(path: str, kind: int) -> bool:
    """Whether a process serves the Unix socket at ``path`` (one that is only left over does not)."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, kind)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except BlockingIOError:
        return True  # a listener whose backlog is full
    except OSError:
        return False
    finally:
        probe.close()
    return True
