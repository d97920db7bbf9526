"""A small file system of its own, for tests of a full disk: a tmpfs mounted on a temp dir, and a
filler file that takes its free space and gives it back.

Needs root (mount). Mounted in this process's mount namespace, so the pipelines a test starts
write to it too; unmounted (lazily: a file still open in it does not keep it) when the block ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def small_tmpfs(size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` (whole pages), mounted on a new temp dir, for the ``with`` block."""
    folder = Path(tempfile.mkdtemp(prefix="pstfs"))
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(folder)],
                       check=True, capture_output=True, timeout=30)
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True, capture_output=True, timeout=30)
    finally:
        folder.rmdir()


class Filler:
    """A file that takes the free space of its file system, and gives some or all of it back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> int:
        """Append to it until the file system is full; its size then."""
        chunk = b"\0" * 4096
        with self.path.open("ab", buffering=0) as out:
            while True:
                try:
                    out.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        return self.path.stat().st_size

    def give_back(self, size_bytes: int) -> None:
        """Free ``size_bytes`` of what it holds."""
        os.truncate(self.path, max(0, self.path.stat().st_size - size_bytes))

    def remove(self) -> None:
        self.path.unlink()
