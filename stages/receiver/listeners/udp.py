"""``udp://host:port``: the statsd convention, and the original daemon's only listener."""

from __future__ import annotations

from stages.receiver.listeners.datagram import DatagramListener
from stages.receiver.listeners.inet import INET_ADDRESSES


class UdpListener(DatagramListener):
    family = INET_ADDRESSES
