"""How a file of the run directory is written and read: private (0600), never through a link.

A write is atomic (a reader sees the old file or the new one whole, never a part), flushed to disk
when it must survive a crash, and goes to a new file (O_EXCL, random name) renamed over the old
one: a rename replaces a link there rather than following it. Reads and other opens refuse a link
(O_NOFOLLOW). stages/rundir/run_dir_check.py refuses a run directory where another user could plant one;
these are the second net.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

#: Flags every open of a run-directory file carries: a link there is an error (ELOOP), not followed.
NO_LINK = os.O_NOFOLLOW | os.O_CLOEXEC


def write_private(path: Path, data: bytes, durable: bool = False) -> None:
    """Replace ``path`` with ``data``; OSError when it cannot be written (the old file then stands)."""
    # mkstemp: O_CREAT | O_EXCL | O_NOFOLLOW, 0600, a name no one could have prepared.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_private(path: Path) -> bytes:
    """``path``'s bytes; OSError when it cannot be read or is a link."""
    with os.fdopen(open_private(path, os.O_RDONLY), "rb") as handle:
        return handle.read()


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """A descriptor of ``path`` opened with ``flags`` (``os.O_*``), never through a link (OSError: ELOOP)."""
    return os.open(path, flags | NO_LINK, mode)


def make_private_dir(path: Path) -> Path:
    """``path`` as a directory of this user's (made 0700 if missing); OSError when what is there is a
    link, not a directory, or another user's."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(errno.ENOTDIR, "not a directory of this user's (a link, or another user's): remove it", str(path))
    return path
