"""What every encoder shares: its options, and its records as lines for the line-writing sinks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stages.forwarder.encoders.options import EncoderOptions


class RecordEncoder:
    def __init__(self, options: EncoderOptions) -> None:
        self.options = options

    def encode(self, aggregate: dict[str, Any]) -> Iterable[bytes]:
        """The records for one aggregate."""
        raise NotImplementedError

    def lines(self, aggregates: list[dict[str, Any]]) -> bytes:
        """Every record of ``aggregates``, each ended by a newline: what the file and console sinks write."""
        return b"".join([record + b"\n" for aggregate in aggregates for record in self.encode(aggregate)])
