"""One way to write a file of the run directory: private (0600) and atomic (a reader sees the old
file or the new one whole, never a part), flushed to disk when it must survive a crash."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes, durable: bool = False) -> None:
    """Replace ``path`` with ``data``; OSError when it cannot be written (the old file then stands)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)
