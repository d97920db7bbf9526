"""File sink: appends one encoded aggregate per line, flushed to the file at the end of every flush.

If the file is moved away (log rotation), the next write reopens the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO

from stages.forwarder.encoders import make_encoder
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig, SinkError, close_quietly, not_empty


@dataclass(frozen=True)
class FileConfig(SinkConfig):
    path: str
    format: str = "json"

    def __post_init__(self) -> None:
        not_empty(self.path, "path")
        super().__post_init__()


class FileSink(BaseSink[FileConfig], name="file", config_type=FileConfig, remote=False):
    def __init__(self, config: FileConfig) -> None:
        super().__init__(config)
        self.path = config.path
        self.encoder = make_encoder(config.format)
        self.handle: IO[bytes] | None = None
        self.inode = 0

    def open(self) -> None:
        try:
            self.handle = open(self.path, "ab")  # noqa: SIM115 - kept open across writes
        except OSError as exc:
            raise SinkError(f"cannot open {self.path}: {exc.strerror}") from None
        self.inode = os.fstat(self.handle.fileno()).st_ino

    def _rotated(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            return True

    def write(self, flush: Flush) -> None:
        if self.handle is None or self._rotated():
            self.close()
            self.open()
        assert self.handle is not None
        data = self.encoder.lines(flush.aggregates)
        try:
            self.handle.write(data)
            self.handle.flush()
        except OSError as exc:
            self.close()
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        close_quietly(self.handle)
        self.handle = None
