"""``unixgram:///path``: a Unix datagram socket (DogStatsD's convention for containers; no UDP loss)."""

from __future__ import annotations

from stages.listeners.datagram import DatagramListener
from stages.listeners.unix_path import UNIX_PATHS


class UnixgramListener(DatagramListener):
    family = UNIX_PATHS

    def kernel_drops(self) -> int:
        # A Unix datagram sender blocks (or gets EAGAIN) instead of the kernel dropping silently.
        return 0
