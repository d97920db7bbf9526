"""Output formats, apart from destinations: a sink's ``format`` key names one of these.

An encoder turns one aggregate into one or more records (a line, a Kafka message value) and never
changes the aggregate (other sinks share it). Adding a format is a file plus an entry here; its class
derives from :class:`stages.forwarder.encoders.base.RecordEncoder`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from stages.forwarder.encoders.influx import InfluxEncoder
from stages.forwarder.encoders.json import JsonEncoder
from stages.forwarder.encoders.options import EncoderOptions
from stages.forwarder.encoders.original import OriginalEncoder


class Encoder(Protocol):
    def encode(self, aggregate: dict[str, Any]) -> Iterable[bytes]:
        """The records for one aggregate."""

    def lines(self, aggregates: list[dict[str, Any]]) -> bytes:
        """Every record of ``aggregates``, each ended by a newline (see encoders.base.RecordEncoder)."""


ENCODERS: dict[str, type[Any]] = {
    "json": JsonEncoder,
    "original": OriginalEncoder,
    "influx": InfluxEncoder,
}


def check_format(name: str) -> None:
    """Raise ValueError naming the known formats when ``name`` is not one."""
    if name not in ENCODERS:
        raise ValueError(f"format: unknown format {name!r} (known: {', '.join(sorted(ENCODERS))})")


def make_encoder(name: str, options: EncoderOptions | None = None) -> Encoder:
    encoder: Encoder = ENCODERS[name](options or EncoderOptions())
    return encoder
