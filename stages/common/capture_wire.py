"""What a receiver sends ``pystatsd capture`` (stages.rundir.capture_request): one ZeroMQ message per event.

A message is a JSON head and, for a burst, one frame per payload read. Heads:
``{"hello": [listener URLs]}`` when a receiver begins sending for a request; ``{"burst": listener URL,
"kind": "datagram"|"stream", "connection": N, "closed": bool, "time": T, "dropped": D}`` for what one
read of one socket gave (a stream's connection numbered by the receiver, ``closed`` once the peer is
gone); ``{"end": true, "dropped": D}`` when it stops. ``dropped`` counts the payloads this receiver
could not hand to ZeroMQ so far (the command read too slowly); every head names its ``receiver`` and
its ``session`` (``<receiver>/<pid>/<ns>``: a receiver restarted in place begins a new one, its
connections and drops counted anew).
"""

from __future__ import annotations

import json
from typing import Any

DATAGRAM = "datagram"
STREAM = "stream"


def encode(head: dict[str, Any], payloads: list[bytes] | None = None) -> list[bytes]:
    return [json.dumps(head).encode(), *(payloads or [])]


def decode(frames: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    """The head and the payloads of a message; ValueError when it is not one a receiver sent."""
    if not frames:
        raise ValueError("an empty message")
    head = json.loads(frames[0])
    if not isinstance(head, dict) or not isinstance(head.get("receiver"), str):
        raise ValueError("a message without its receiver")
    return head, frames[1:]
