"""Console sink: one encoded aggregate per line on standard output."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from stages.forwarder.encoders import make_encoder
from stages.forwarder.encoders.options import EncoderOptions
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig


@dataclass(frozen=True)
class ConsoleConfig(SinkConfig):
    format: str = "json"


class ConsoleSink(BaseSink[ConsoleConfig], name="console", config_type=ConsoleConfig, remote=False):
    def __init__(self, config: ConsoleConfig, options: EncoderOptions | None = None) -> None:
        super().__init__(config)
        # ``options`` are a remote sink's when this prints in its place (debug_mode).
        self.encoder = make_encoder(config.format, options)

    def write(self, flush: Flush) -> None:
        out = sys.stdout.buffer
        out.write(self.encoder.lines(flush.aggregates))
        out.flush()

    def close(self) -> None:
        sys.stdout.flush()
