"""``tcp://host:port``: newline-delimited metrics over TCP connections."""

from __future__ import annotations

from stages.receiver.listeners.inet import INET_ADDRESSES
from stages.receiver.listeners.stream import StreamListener


class TcpListener(StreamListener):
    family = INET_ADDRESSES
