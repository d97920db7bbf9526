"""Output formats, apart from destinations: a sink's ``format`` key names one of these.

An encoder turns one aggregate into one or more records (a line, a Kafka message value). Adding a
format is a file plus an entry here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from stages.forwarder.encoders.json import JsonEncoder


class Encoder(Protocol):
    def encode(self, aggregate: dict[str, Any]) -> Iterable[bytes]:
        """The records for one aggregate; must not change ``aggregate`` (other sinks share it)."""


ENCODERS: dict[str, type[Any]] = {
    "json": JsonEncoder,
}


def check_format(name: str) -> None:
    """Raise ValueError naming the known formats when ``name`` is not one."""
    if name not in ENCODERS:
        raise ValueError(f"format: unknown format {name!r} (known: {', '.join(sorted(ENCODERS))})")
