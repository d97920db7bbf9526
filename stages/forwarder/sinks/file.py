"""File sink: appends one encoded aggregate per line, flushed to the file at the end of every flush.

If the file is moved away (log rotation), the next write reopens the path.

A flush is written whole or not at all. It is written as it is encoded, a chunk of aggregates at a
time (so it never costs more than a chunk's lines); a write that fails part way (the file system
full, or a body found part way not to be aggregates) takes back what it wrote: the file is
truncated to where the flush began, so no torn line stays, and the runner's retry, handed the same
flush, encodes and appends it once. Each flush of a regular file ends with
``fdatasync``, so that an error the file system reports only when it writes the data out (NFS, a
thin volume) fails that flush, taken back and retried, rather than one the sink counted delivered.
The sink is its file's only writer (two file sinks on one path are refused at load): what another
process appended after a failed flush's first bytes (or a ``copytruncate`` rotation) is never
truncated; the flush's partial lines then stay, and a log line says so.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from typing import IO, ClassVar

from stages.forwarder.encoders import make_encoder
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig, SinkError, close_quietly, not_empty

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileConfig(SinkConfig):
    path: str
    format: str = "json"
    #: The permissions of a file the sink creates (octal, as chmod takes them); an existing file keeps its own.
    mode: str = "0600"
    writes_records: ClassVar[bool] = True

    def __post_init__(self) -> None:
        not_empty(self.path, "path")
        if not re.fullmatch(r"0?[0-7]{3}", self.mode):
            raise ValueError(f"mode: expected an octal mode such as \"0640\", got {self.mode!r}")
        super().__post_init__()

    def sole_writer_of(self) -> tuple[str, str]:
        # Resolved: two spellings of one file (a symlink, a ``..``) are one file.
        return "path", os.path.realpath(self.path)

    def problems_here(self) -> list[str]:
        problem = append_problem(self.path)
        return [f"path: cannot open {self.path}: {problem}"] if problem else []


#: Where the kernel shows its own state as files: a file there is never one the sink can append to.
KERNEL_FILE_SYSTEMS = ("/proc", "/sys")


def append_problem(path: str) -> str | None:
    """Why :func:`open_for_append` could never open ``path``, or None; creates and changes nothing.

    A device or pipe (``/dev/stdout``) is taken as it is: opening a pipe that nobody reads would
    block, and what it is connected to at run time may differ.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return _folder_problem(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:  # a folder on the way that is a file (ENOTDIR), or cannot be searched
        return exc.strerror
    if stat.S_ISDIR(mode):
        return "it is a folder"
    if not stat.S_ISREG(mode):
        return None
    kernel = _kernel_file_system(path)
    if kernel:
        return f"{kernel} holds the kernel's files, not aggregates"
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))  # neither truncates nor writes
    except OSError as exc:
        return exc.strerror
    return None


def _folder_problem(folder: str) -> str | None:
    """Why no file could be made in ``folder``, or None."""
    if not os.path.exists(folder):
        return f"folder {folder} does not exist"
    if not os.path.isdir(folder):
        return f"{folder} is not a folder"
    kernel = _kernel_file_system(folder)
    if kernel:
        return f"{kernel} holds the kernel's files, not aggregates"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable"
    return None


def _kernel_file_system(path: str) -> str | None:
    real = os.path.realpath(path)
    return next((top for top in KERNEL_FILE_SYSTEMS if real == top or real.startswith(top + "/")), None)


def open_for_append(path: str, mode: int) -> int:
    """A descriptor appending to ``path``; a file made here gets ``mode`` exactly, whatever the umask."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return os.open(path, flags)
    os.fchmod(fd, mode)
    return fd


class FileSink(BaseSink[FileConfig], name="file", config_type=FileConfig, remote=False):
    def __init__(self, config: FileConfig) -> None:
        super().__init__(config)
        self.path = config.path
        self.encoder = make_encoder(config.format)
        # Unbuffered: each write is one system call, so what reached the file is known to the byte.
        self.handle: IO[bytes] | None = None
        self.inode = 0
        #: A regular file can be synced and truncated back; a device or pipe (/dev/stdout) cannot.
        self.regular = False
    def open(self) -> None:
        try:
            self.handle = os.fdopen(open_for_append(self.path, int(self.config.mode, 8)), "ab", buffering=0)
        except OSError as exc:
            raise SinkError(f"cannot open {self.path}: {exc.strerror}") from None
        status = os.fstat(self.handle.fileno())
        self.inode, self.regular = status.st_ino, stat.S_ISREG(status.st_mode)

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
        fd = self.handle.fileno()
        start = os.fstat(fd).st_size if self.regular else 0
        written = [0]
        try:
            # Written as encoded, a chunk at a time: the flush costs one chunk's lines, never the whole
            # flush encoded at once (a retry, after the take-back, encodes it again).
            for chunk in flush.chunks():
                self._write_all(self.encoder.lines(chunk), written)
            if self.regular:
                os.fdatasync(fd)
        except OSError as exc:
            if self.regular and written[0]:
                self._take_back(fd, start, written[0])
            self.close()
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from None
        except Exception:  # a flush body that is not one (DecodeError) found part way: none of it stays
            if self.regular and written[0]:
                self._take_back(fd, start, written[0])
            raise

    def _write_all(self, data: bytes, written: list[int]) -> None:
        """Write ``data`` whole, adding to ``written[0]`` what reached the file (to the byte, even when it fails)."""
        assert self.handle is not None
        done = 0
        with memoryview(data) as view:
            while done < len(data):
                step = self.handle.write(view[done:]) or 0
                done += step
                written[0] += step

    def _take_back(self, fd: int, start: int, written: int) -> None:
        """Truncate the file back to ``start``, where the failed flush began, if its ``written`` bytes are
        still the file's end: with another writer's after them, truncating would take those too."""
        try:
            size = os.fstat(fd).st_size
            if size == start + written:
                os.ftruncate(fd, start)
                return
            log.error("%s is %d bytes, not the %d the failed flush left (another writer, or a copytruncate "
                      "rotation): the %d bytes it wrote from offset %d stay, and the flush is written again whole",
                      self.path, size, start + written, written, start)
        except OSError as exc:
            log.error("Cannot take back the %d bytes a failed flush wrote to %s from offset %d (%s): they stay "
                      "in it and the flush is written again whole", written, self.path, start, exc.strerror)

    def close(self) -> None:
        close_quietly(self.handle)
        self.handle = None
