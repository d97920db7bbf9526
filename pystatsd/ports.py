"""What a TCP or UDP port number may be: one rule for the client, and the daemon's config, sinks and listeners.

Here, in the client library (which needs the standard library alone), so that both sides read it.
"""

from __future__ import annotations

#: Port 0 asks the kernel for any port: never what a user means by an address to send to or serve on.
PORTS = range(1, 65536)


def check_port(port: object, key: str) -> None:
    """ValueError naming ``key`` unless ``port`` is a port number."""
    if isinstance(port, bool) or not isinstance(port, int) or port not in PORTS:
        raise ValueError(f"{key}: must be between {PORTS[0]} and {PORTS[-1]}, got {port!r}")
