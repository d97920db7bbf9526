"""The tap points: a stage shows the metrics passing it to ``pystatsd tap``, sampled, only while one listens.

Each stage process that has a tap point binds one ZeroMQ XPUB socket, ``<run>/tap/<process>.sock``
(:func:`tap_endpoint`). A tap connects a SUB to it and subscribes to one topic, its :class:`TapSpec`
as JSON: where it taps (``received``, ``mapped``, ``flushed``), the name glob, the tags, the rate, and
a nonce of its own. The XPUB hands the stage every subscription and unsubscription (ZeroMQ sends an
unsubscription when a subscriber disconnects or dies), so :meth:`TapPoint.specs` knows, for the cost
of one non-blocking look per burst (and at most one each :data:`LOOK_EVERY_SECS`), which taps listen;
with none, the stage does nothing more.

For each listening spec the stage filters what passes (:meth:`TapSpec.wants`), samples at most
``rate`` metrics a second (:meth:`TapPoint.allowance`) and publishes each one as ``[topic, json]``
with the spec's own topic, so every tap receives exactly what it asked for. The XPUB's send queue is
small and ZeroMQ drops what a slow or stopped tap does not read: a tap never holds a stage up.

When a stage first sees a tap's subscription it says so on that topic, ``[topic, LISTENING, process
name]`` (:data:`LISTENING` is empty, where a metric's JSON never is): only from then on does it show
that tap what passes, so the tap says it taps that stage then, not when its connection was made (what
was sent in between would not be shown). An idle stage looks at each wake-up too
(:meth:`TapPoint.specs`), so a tap never waits for traffic to hear it.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from stages.common.model import Tags
from stages.common.sharding import MAX_IPC_PATH
from stages.rundir.private_file import make_private_dir

log = logging.getLogger(__name__)

#: The run directory's folder of tap sockets.
TAP_DIR = "tap"
#: What each tap point shows: parsed by the receiver, after its rules, the aggregates the forwarder fans out.
RECEIVED, MAPPED, FLUSHED = "received", "mapped", "flushed"
WHERE = (RECEIVED, MAPPED, FLUSHED)
#: Which stage shows each point (the process names start with it).
STAGE_OF = {RECEIVED: "receiver", MAPPED: "receiver", FLUSHED: "forwarder"}
#: Messages a tap point queues for a tap before ZeroMQ drops the rest (a tap that does not read).
SEND_QUEUE = 1000
#: How often, at most, a stage looks at its tap socket's subscriptions: a look costs a few microseconds, a
#: busy receiver has a thousand bursts a second, and a new tap waits this long at most.
LOOK_EVERY_SECS = 0.01
#: Version of a spec's JSON; a stage ignores a subscription it cannot read (a newer tap's).
SPEC_VERSION = 1
#: The second frame of a stage's message saying it has seen a tap's subscription (a metric's JSON is never empty).
LISTENING = b""


def tap_path(run_dir: os.PathLike[str] | str, process: str) -> Path:
    return Path(run_dir) / TAP_DIR / f"{process}.sock"


def tap_endpoint(run_dir: os.PathLike[str] | str, process: str) -> str:
    path = str(tap_path(run_dir, process))
    if len(path) > MAX_IPC_PATH:
        raise ValueError(f"run_dir: tap socket path {path!r} is longer than {MAX_IPC_PATH} characters")
    return f"ipc://{path}"


@dataclass(frozen=True)
class TapSpec:
    """What one tap asks for; its JSON is its subscription topic."""

    where: str = RECEIVED
    #: A shell glob on the metric name (fnmatch, case-sensitive); None: every name.
    match: str | None = None
    #: (key, value) pairs a metric must all carry.
    tags: tuple[tuple[str, str], ...] = ()
    #: Metrics a second, at most, from each stage process.
    rate: float = 100.0
    #: Makes two taps' topics differ, so each gets its own sample.
    nonce: str = ""
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.where not in WHERE:
            raise ValueError(f"where: {self.where!r} is not one of {', '.join(WHERE)}")
        if not self.rate > 0 or not math.isfinite(self.rate):
            raise ValueError(f"rate: {self.rate!r} is not a positive number")
        if self.match is not None:
            object.__setattr__(self, "_pattern", re.compile(fnmatch.translate(self.match)))

    def topic(self) -> bytes:
        return json.dumps({"v": SPEC_VERSION, "where": self.where, "match": self.match,
                           "tags": [list(pair) for pair in self.tags], "rate": self.rate, "nonce": self.nonce},
                          sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_topic(cls, topic: bytes) -> TapSpec:
        """The spec a subscription names (ValueError when it is no spec this version reads)."""
        try:
            raw = json.loads(topic)
            if raw["v"] != SPEC_VERSION:
                raise ValueError(f"spec version {raw['v']!r}")
            return cls(where=raw["where"], match=raw["match"], tags=tuple((k, v) for k, v in raw["tags"]),
                       rate=float(raw["rate"]), nonce=raw["nonce"])
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a tap spec: {exc}") from None

    def wants_name(self, name: str) -> bool:
        return self._pattern is None or self._pattern.fullmatch(name) is not None

    def wants_tags(self, tags: Tags) -> bool:
        """Whether the flat ``tags`` carry every pair the spec asks for."""
        if not self.tags:
            return True
        have = set(zip(tags[0::2], tags[1::2], strict=True))
        return all(pair in have for pair in self.tags)

    def wants(self, name: str, tags: Tags) -> bool:
        return self.wants_name(name) and self.wants_tags(tags)


class Listening:
    """One listening spec, and how many metrics it was sent in the current second."""

    __slots__ = ("spec", "topic", "second", "sent")

    def __init__(self, spec: TapSpec, topic: bytes) -> None:
        self.spec, self.topic = spec, topic
        self.second = 0
        self.sent = 0


def open_tap_point(ctx: zmq.Context[zmq.Socket[bytes]], run_dir: os.PathLike[str] | str, process: str,
                   clock: Callable[[], float] = time.monotonic) -> TapPoint | None:
    """``process``'s tap point, or None (logged) when it cannot bind: a tap point never keeps a stage from running."""
    try:
        return TapPoint(ctx, run_dir, process, clock)
    except (zmq.ZMQError, OSError, ValueError) as exc:
        log.warning("No tap point: pystatsd tap cannot show %s (%s)", process, exc)
        return None


def listening_to(point: TapPoint | None) -> list[Listening]:
    """The taps listening to ``point`` (none without a point): the one look a stage pays per burst."""
    return [] if point is None else point.specs()


class TapPoint:
    """A stage process's XPUB: which taps listen, and what it publishes to each."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: os.PathLike[str] | str, process: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.process = process
        make_private_dir(tap_path(run_dir, process).parent)
        self.endpoint = tap_endpoint(run_dir, process)
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.SNDHWM, SEND_QUEUE)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(self.endpoint)
        #: topic → the tap listening with it
        self.listening: dict[bytes, Listening] = {}
        self._listening_list: list[Listening] = []
        self._next_look = 0.0

    def specs(self) -> list[Listening]:
        """The taps listening now: every subscription change that came since the last look, then the list.
        One non-blocking look when nothing changed, at most every LOOK_EVERY_SECS (the list is kept between)."""
        now = self.clock()
        if now < self._next_look:
            return self._listening_list
        self._next_look = now + LOOK_EVERY_SECS
        while int(self.pub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                message = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._subscription(message)
            self._listening_list = list(self.listening.values())
        return self._listening_list

    def _subscription(self, message: bytes) -> None:
        if not message:
            return
        topic = message[1:]
        if message[0] == 0:
            self.listening.pop(topic, None)
            return
        if message[0] != 1:
            return
        try:
            spec = TapSpec.from_topic(topic)
        except ValueError as exc:
            log.warning("Ignored a tap subscription this version cannot read: %s", exc)
            return
        self.listening[topic] = Listening(spec, topic)
        self.pub.send_multipart([topic, LISTENING, self.process.encode()], zmq.NOBLOCK)

    def allowance(self, listening: Listening) -> int:
        """How many more metrics ``listening`` may be sent in the current second."""
        second = int(self.clock())
        if second != listening.second:
            listening.second, listening.sent = second, 0
        return max(0, math.ceil(listening.spec.rate) - listening.sent)

    def publish(self, listening: Listening, shown: dict[str, Any]) -> None:
        """One metric to one tap; an XPUB never blocks: ZeroMQ drops it when that tap's queue is full."""
        listening.sent += 1
        self.pub.send_multipart([listening.topic, json.dumps(shown, separators=(",", ":")).encode()], zmq.NOBLOCK)

    def close(self) -> None:
        self.pub.close(linger=0)
