"""``udp://host:port``: the statsd convention, and the original daemon's only listener."""

from __future__ import annotations

from stages.listeners.datagram import DatagramListener
from stages.listeners.inet import INET_ADDRESSES


class UdpListener(DatagramListener):
    family = INET_ADDRESSES
