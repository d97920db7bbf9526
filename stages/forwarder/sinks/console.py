"""Console sink: one encoded aggregate per line on standard output."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from stages.forwarder.encoders import check_format, make_encoder
from stages.forwarder.encoders.options import EncoderOptions
from stages.forwarder.sinks.base import BufferConfig, Flush


@dataclass(frozen=True)
class ConsoleConfig(BufferConfig):
    format: str = "json"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_format(self.format)


class ConsoleSink:
    name: ClassVar[str] = "console"
    config_type: ClassVar[type[ConsoleConfig]] = ConsoleConfig
    remote: ClassVar[bool] = False

    def __init__(self, config: ConsoleConfig, options: EncoderOptions | None = None) -> None:
        self.encoder = make_encoder(config.format, options)

    def open(self) -> None:
        pass

    def write(self, flush: Flush) -> None:
        out = sys.stdout.buffer
        out.write(self.encoder.lines(flush.aggregates))
        out.flush()

    def close(self) -> None:
        sys.stdout.flush()
