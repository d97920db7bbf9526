"""The raw relay (``relay:``): every line the receiver reads, unchanged, to each UDP destination, before
parsing and the rules, never blocking.

Each destination is a non-blocking UDP socket connected to the address its name resolved to when
the receiver started (a reload restarts the receiver in place, which resolves anew): no lookup ever
waits in the loop. What the receiver read in one wake-up is packed once (:mod:`.relay_packing`) and
sent to each destination, one ``send`` per datagram (Python has no ``sendmmsg``; on a connected socket
``send`` is the cheapest call, see bench/RESULTS.md). A datagram the kernel does not take is a relay
drop, counted in lines per destination and reason:

- ``buffer_full``: the socket's send buffer is full (EAGAIN, ENOBUFS); the rest of that wake-up's
  datagrams to that destination are dropped too, rather than each refused in turn;
- ``unreachable``: the destination refused (ECONNREFUSED: nothing listens there, as an ICMP reply to
  an earlier datagram told the kernel) or cannot be reached (any other error). The destination is
  then down for :data:`RETRY_SECS`: what is read meanwhile is counted without a system call, so a
  dead destination costs the receiver nothing; then an empty datagram probes it, and
  :data:`PROBE_SECS` later the socket's pending error says whether it is up again;
- ``unresolved``: its name did not resolve at start (until a reload resolves it);
- ``too_long``: a line longer than any UDP datagram holds.

A datagram the kernel took and the network or the destination lost after is not seen here: the
first datagram sent to a destination that has just gone down is one (its ICMP reply is how the
kernel learns it is down). The empty probe at start and on retry is what keeps that from costing a
line while a destination stays down.
"""

from __future__ import annotations

import errno
import logging
import socket

from stages.common.addresses import parse_relay
from stages.common.log_throttle import LogThrottle
from stages.receiver.relay_packing import lines, pack

log = logging.getLogger(__name__)

#: How long a destination that refused stays down (lines counted, nothing sent) before it is probed.
RETRY_SECS = 1.0
#: How long after its probe a down destination's socket is asked whether the probe was refused: an
#: ICMP reply from loopback or a LAN is back well within it.
PROBE_SECS = 0.05
#: Errors that say the socket has no room now: the datagram is dropped, the destination is not down.
FULL_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})
LOG_EVERY_SECS = 10.0

BUFFER_FULL = "buffer_full"
UNREACHABLE = "unreachable"
UNRESOLVED = "unresolved"
TOO_LONG = "too_long"


class Destination:
    """One ``udp://host:port`` of ``relay:``: its socket, whether it is down, what it was sent and lost."""

    def __init__(self, url: str, now: float) -> None:
        self.url = url
        #: host:port as the config names it: the self-metrics' ``destination`` tag.
        self.name = url.partition("://")[2]
        self.sock: socket.socket | None = None
        #: Datagrams the kernel took for this destination.
        self.datagrams = 0
        #: reason → lines not relayed.
        self.dropped: dict[str, int] = {}
        #: While the clock is before it, the destination is down: lines are counted, not sent.
        self.down_until = 0.0
        #: Whether the empty datagram that asks if it is up again was sent (and down_until is its answer's time).
        self.probed = False
        self._log = LogThrottle(LOG_EVERY_SECS)
        host, port = parse_relay(url)
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(address)
        except OSError as exc:
            log.error("Relay to %s: cannot resolve or connect (%s); its lines are counted as dropped "
                      "(reason %s) until a reload", url, exc, UNRESOLVED)
            return
        self.sock = sock
        log.info("Relaying every line read to %s (%s)", url, address[0])
        # Asked once before any line goes: the first datagram to a destination already down is then
        # refused by the kernel (and counted) rather than lost beyond it.
        self._probe(now)

    def send(self, datagrams: list[bytes], now: float) -> None:
        """Every datagram the kernel takes now; the rest counted."""
        if self.sock is None:
            self.drop(datagrams, UNRESOLVED)
            return
        if self.down_until and not self.back_up(now):
            self.drop(datagrams, UNREACHABLE)
            return
        send = self.sock.send
        for i, datagram in enumerate(datagrams):
            try:
                send(datagram)
            except OSError as exc:
                self.datagrams += i
                self.refused(exc, datagrams[i:], now)
                return
        self.datagrams += len(datagrams)

    def back_up(self, now: float) -> bool:
        """Whether a down destination may be sent to again: once its time is up, it is probed, and
        PROBE_SECS later the socket says whether the probe was refused."""
        if now < self.down_until:
            return False
        assert self.sock is not None
        if not self.probed:
            self._probe(now)
            self.down_until, self.probed = now + PROBE_SECS, True
            return False
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.probed = False
        if error:
            self.down_until = now + RETRY_SECS
            return False
        self.down_until = 0.0
        log.info("Relay to %s: up again", self.url)
        return True

    def _probe(self, now: float) -> None:
        """An empty datagram (a statsd server reads no line in it): refused, it sets the socket's error."""
        assert self.sock is not None
        try:
            self.sock.send(b"")
        except OSError as exc:
            if exc.errno not in FULL_ERRNOS:
                self.down_until = now + RETRY_SECS

    def refused(self, exc: OSError, unsent: list[bytes], now: float) -> None:
        """The kernel refused ``unsent[0]``: count it and the rest of the wake-up's datagrams."""
        if exc.errno in FULL_ERRNOS:
            reason = BUFFER_FULL
        else:
            reason = UNREACHABLE
            self.down_until, self.probed = now + RETRY_SECS, False
        self.drop(unsent, reason)
        if self._log.ready():
            log.warning("Relay to %s: %s (%s); dropped so far: %s", self.url, reason,
                        errno.errorcode.get(exc.errno or 0, exc), self.dropped)

    def drop(self, datagrams: list[bytes], reason: str, count: int | None = None) -> None:
        n = sum(lines(datagram) for datagram in datagrams) if count is None else count
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class Relay:
    """Every destination of ``relay:``; :meth:`forward` is what the receiver calls with each wake-up's payloads."""

    def __init__(self, urls: list[str], max_datagram_bytes: int, now: float) -> None:
        self.limit = max_datagram_bytes
        self.destinations = [Destination(url, now) for url in urls]

    def forward(self, payloads: list[bytes], now: float) -> None:
        datagrams, too_long = pack(payloads, self.limit)
        for destination in self.destinations:
            if datagrams:
                destination.send(datagrams, now)
            if too_long:
                destination.drop([], TOO_LONG, too_long)

    def close(self) -> None:
        for destination in self.destinations:
            destination.close()


def open_relay(urls: list[str], max_datagram_bytes: int, now: float) -> Relay | None:
    """The relay ``relay:`` asks for; None without destinations (the receiver then pays nothing)."""
    return Relay(urls, max_datagram_bytes, now) if urls else None
