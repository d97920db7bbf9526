"""Console sink: one encoded aggregate per line on standard output."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from stages.forwarder.encoders import ENCODERS, check_format
from stages.forwarder.sinks.base import Flush


@dataclass(frozen=True)
class ConsoleConfig:
    format: str = "json"

    def __post_init__(self) -> None:
        check_format(self.format)


class ConsoleSink:
    name: ClassVar[str] = "console"
    config_type: ClassVar[type[ConsoleConfig]] = ConsoleConfig
    remote: ClassVar[bool] = False

    def __init__(self, config: ConsoleConfig) -> None:
        self.encoder = ENCODERS[config.format]()

    def open(self) -> None:
        pass

    def write(self, flush: Flush) -> None:
        out = sys.stdout.buffer
        for aggregate in flush.aggregates:
            for record in self.encoder.encode(aggregate):
                out.write(record + b"\n")
        out.flush()

    def close(self) -> None:
        sys.stdout.flush()
