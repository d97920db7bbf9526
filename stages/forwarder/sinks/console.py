"""Console sink: one encoded aggregate per line on standard output."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from stages.forwarder.encoders import make_encoder
from stages.forwarder.encoders.options import EncoderOptions
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig


@dataclass(frozen=True)
class ConsoleConfig(SinkConfig):
    format: str = "json"
    #: Print the daemon's own metrics too; off, a terminal shows the user's aggregates only (the
    #: remote sinks get the daemon's own metrics either way).
    self_metrics: bool = False
    writes_records: ClassVar[bool] = True


class ConsoleSink(BaseSink[ConsoleConfig], name="console", config_type=ConsoleConfig, remote=False):
    def __init__(self, config: ConsoleConfig, options: EncoderOptions | None = None,
                 self_metrics_prefix: str = "") -> None:
        """``self_metrics_prefix``: the names of the daemon's own metrics, left out unless ``self_metrics``."""
        super().__init__(config)
        # ``options`` are a remote sink's when this prints in its place (debug_mode).
        self.encoder = make_encoder(config.format, options)
        self.left_out = self_metrics_prefix if self_metrics_prefix and not config.self_metrics else None

    def write(self, flush: Flush) -> None:
        out = sys.stdout.buffer
        for aggregates in flush.chunks():
            if self.left_out is not None:
                aggregates = [a for a in aggregates if not a["name"].startswith(self.left_out)]
            out.write(self.encoder.lines(aggregates))
        out.flush()

    def close(self) -> None:
        sys.stdout.flush()
