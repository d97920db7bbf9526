"""``pystatsd replay``: a capture file's payloads sent again, as they were read.

Datagrams go as datagrams (UDP, Unix datagram), a stream connection's chunks over one connection of
their own (TCP, Unix stream) closed where the capture saw it close. Each goes to the ``--to`` listener
of its kind (one datagram and one stream listener may be given) or else to the listener it was read
on (a wildcard address reached on loopback), at the recorded pace, ``speed`` times faster, or as fast
as the sockets take it (``speed`` None). Anything but a loopback address
or a Unix socket needs ``force``: a replay is traffic, and production is not where it should land
by mistake. A truncated, foreign or newer file is refused before anything is sent; a damaged one is
replayed up to its damage, and :class:`ReplayError` says where.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.addresses import loopback_if_any, parse_listener
from stages.control.capture_file import (
    CLOSE,
    DATAGRAM,
    CaptureDamaged,
    CaptureFileError,
    CaptureReader,
    CaptureTruncated,
    Record,
)

DATAGRAM_SCHEMES = {"udp", "unixgram"}
#: A pause shorter than this is not slept (the records are sent at once): sleeping costs more than it keeps.
MIN_SLEEP_SECS = 0.0005


class ReplayError(Exception):
    """The replay was refused, or stopped; the message says why (and where, for a damaged file)."""


@dataclass
class Sent:
    datagrams: int = 0
    chunks: int = 0
    connections: int = 0
    bytes: int = 0


def scan(path: Path) -> tuple[list[str], CaptureDamaged | None]:
    """The listeners ``path`` records on, and its damage if it has any; ReplayError when it is refused."""
    listeners: dict[str, None] = {}
    try:
        with path.open("rb") as handle:
            reader = CaptureReader(handle, str(path))
            for record in reader.records():
                listeners.setdefault(record.listener)
    except CaptureTruncated as exc:
        raise ReplayError(f"{exc}: nothing was sent") from None
    except CaptureDamaged as exc:
        return list(listeners), exc
    except CaptureFileError as exc:
        raise ReplayError(str(exc)) from None
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror}") from None
    return list(listeners), None


def destinations(listeners: list[str], to: list[str], force: bool) -> dict[str, tuple[str, Any]]:
    """Recorded listener → (scheme, address) to send to: the ``to`` URL of its kind (datagram or
    stream), or itself without any; ReplayError for a bad URL, a kind missing or a remote address."""
    by_kind: dict[bool, str] = {}
    for url in to:
        try:
            datagrams = parse_listener(url)[0] in DATAGRAM_SCHEMES
        except ValueError as exc:
            raise ReplayError(f"--to: {exc}") from None
        if by_kind.setdefault(datagrams, url) != url:
            raise ReplayError(f"--to: {by_kind[datagrams]} and {url} are both {_kind(datagrams)} listeners: give "
                              "at most one of each kind")
    chosen: dict[str, tuple[str, Any]] = {}
    for recorded in listeners:
        datagrams = recorded.split("://", 1)[0] in DATAGRAM_SCHEMES
        url = by_kind.get(datagrams, recorded)
        if to and datagrams not in by_kind:
            raise ReplayError(f"the capture holds what {recorded} read, {_kind(datagrams)}s: give a "
                              f"{_kind(datagrams)} listener in --to too (datagrams and streams do not mix)")
        try:
            scheme, address = parse_listener(url)
        except ValueError as exc:
            raise ReplayError(f"the capture's listener {exc}") from None
        if scheme in ("udp", "tcp"):
            address = (loopback_if_any(address[0]), address[1])
            if not force and not loopback(address[0]):
                raise ReplayError(f"{url} is not a loopback address: give --force to send a replay there")
        chosen[recorded] = (scheme, address)
    return chosen


def _kind(datagrams: bool) -> str:
    return "datagram" if datagrams else "stream"


def loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback one."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in found)


class Sender:
    """The sockets of a replay: one per datagram destination, one per recorded stream connection."""

    def __init__(self, chosen: dict[str, tuple[str, Any]]) -> None:
        self.chosen = chosen
        self.datagram_sockets: dict[str, socket.socket] = {}
        self.streams: dict[tuple[str, int], socket.socket] = {}
        self.sent = Sent()

    def send(self, record: Record) -> None:
        scheme, address = self.chosen[record.listener]
        try:
            if record.kind == DATAGRAM:
                self._datagram(record.listener, scheme, address).sendto(record.payload, address)
                self.sent.datagrams += 1
            elif record.kind == CLOSE:
                stream = self.streams.pop((record.listener, record.connection), None)
                if stream is not None:
                    stream.close()
            else:
                self._stream(record, scheme, address).sendall(record.payload)
                self.sent.chunks += 1
        except OSError as exc:
            raise ReplayError(f"cannot send to {scheme}://{_shown(address)}: {exc.strerror or exc}") from None
        self.sent.bytes += len(record.payload)

    def _datagram(self, listener: str, scheme: str, address: Any) -> socket.socket:
        sock = self.datagram_sockets.get(listener)
        if sock is None:
            family = socket.AF_UNIX if scheme == "unixgram" else _inet_family(address[0])
            sock = self.datagram_sockets[listener] = socket.socket(family, socket.SOCK_DGRAM)
        return sock

    def _stream(self, record: Record, scheme: str, address: Any) -> socket.socket:
        key = (record.listener, record.connection)
        sock = self.streams.get(key)
        if sock is None:
            family = socket.AF_UNIX if scheme == "unix" else _inet_family(address[0])
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.connect(address)
            except OSError:
                sock.close()
                raise
            self.streams[key] = sock
            self.sent.connections += 1
        return sock

    def close(self) -> None:
        for sock in [*self.datagram_sockets.values(), *self.streams.values()]:
            sock.close()
        self.datagram_sockets.clear()
        self.streams.clear()


def _inet_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _shown(address: Any) -> str:
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def replay(path: Path, to: list[str], speed: float | None, loops: int, force: bool) -> Sent:
    """Send ``path``'s records ``loops`` times; ReplayError when refused, or at damage (after what preceded it)."""
    listeners, damage = scan(path)
    sender = Sender(destinations(listeners, to, force))
    try:
        for _ in range(loops):
            _one_pass(path, sender, speed)
            # A connection the capture did not see close is closed at the end of each pass.
            for sock in sender.streams.values():
                sock.close()
            sender.streams.clear()
            if damage is not None:
                raise ReplayError(f"{damage}: replayed up to there, then stopped")
    finally:
        sender.close()
    return sender.sent


def _one_pass(path: Path, sender: Sender, speed: float | None) -> None:
    with path.open("rb") as handle:
        reader = CaptureReader(handle, str(path))
        began = time.monotonic()
        first: float | None = None
        try:
            for record in reader.records():
                if speed is not None:
                    first = record.time if first is None else first
                    wait = began + (record.time - first) / speed - time.monotonic()
                    if wait > MIN_SLEEP_SECS:
                        time.sleep(wait)
                sender.send(record)
        except CaptureDamaged:
            return  # scan() found it: replay() says where once the pass is done
