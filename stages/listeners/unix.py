"""``unix:///path``: newline-delimited metrics over a Unix stream socket."""

from __future__ import annotations

import socket

from stages.listeners.stream import StreamListener
from stages.listeners.unix_path import bind_unix, unix_path


class UnixStreamListener(StreamListener):
    parse_address = staticmethod(unix_path)
    #: A path has one owner: the first receiver serves it.
    shares_port = False

    @classmethod
    def open(cls, url: str, address: str, receive_buffer_bytes: int, socket_mode: int,
             reuse_port: bool) -> UnixStreamListener:
        return cls(url, bind_unix(address, socket.SOCK_STREAM, socket_mode, url))
