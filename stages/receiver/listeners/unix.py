"""``unix:///path``: newline-delimited metrics over a Unix stream socket."""

from __future__ import annotations

from stages.receiver.listeners.stream import StreamListener
from stages.receiver.listeners.unix_path import UNIX_PATHS


class UnixStreamListener(StreamListener):
    family = UNIX_PATHS
