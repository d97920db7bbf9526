"""Steady statsd traffic for tests and the benchmark: datagrams to one UDP port, paced, bounded, counted."""

from __future__ import annotations

import itertools
import math
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def counter_increments(names: Iterable[str]) -> dict[str, str]:
    """name → an increment of 1 of that counter: SteadyTraffic's ``sent[name]`` is then what it sent of each."""
    return {name: f"{name}:1|c" for name in names}


class SteadyTraffic(Generic[K]):
    """Sends ``datagrams`` (key → datagram) to 127.0.0.1:``port`` in turn, over and over, one every
    ``every_secs``: from a thread while a ``with`` block lasts, or at once with run().

    Bounded whatever the caller does: at most ``count`` datagrams if given, and ``max_secs`` seconds.
    ``sent[key]`` counts the datagrams sent of each key, ``total`` all of them. ``enter`` runs in the
    sending thread before it opens its socket: a ``HostNetwork.enter`` sends from inside a host.
    """

    def __init__(self, port: int, datagrams: Mapping[K, str | bytes], every_secs: float = 0.01,
                 max_secs: float = 300.0, count: int | None = None,
                 enter: Callable[[], object] | None = None) -> None:
        if not datagrams:
            raise ValueError("SteadyTraffic needs at least one datagram to send")
        self.port, self.every_secs, self.max_secs = port, every_secs, max_secs
        self.count = math.inf if count is None else count
        self.datagrams = {key: d.encode() if isinstance(d, str) else d for key, d in datagrams.items()}
        self.sent: dict[K, int] = dict.fromkeys(self.datagrams, 0)
        self.total = 0
        self._enter = enter
        self._done = threading.Event()
        self._thread = threading.Thread(target=self.run, name="steady-traffic", daemon=True)

    def run(self) -> None:
        """Send until stopped, ``count`` datagrams were sent, or ``max_secs`` have passed."""
        deadline = time.monotonic() + self.max_secs
        turns = itertools.cycle(self.datagrams.items())
        if self._enter is not None:
            self._enter()
        # A socket of its own: the caller may close its own (a pipeline's, at stop) while this still runs.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not self._done.is_set() and time.monotonic() < deadline and self.total < self.count:
                key, datagram = next(turns)
                sock.sendto(datagram, ("127.0.0.1", self.port))
                self.sent[key] += 1
                self.total += 1
                if self.total < self.count:  # no pause after the last one
                    self._done.wait(self.every_secs)

    def __enter__(self) -> SteadyTraffic[K]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop: the thread ends within one pause, so ``sent`` is final once the block is left."""
        self._done.set()
        self._thread.join()
