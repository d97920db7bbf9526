"""What the Unix-socket listeners (unixgram, unix) share: paths, stale sockets, permissions."""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from collections.abc import Callable

from stages.common.addresses import live_unix_socket, unix_path

#: struct ucred, what SO_PEERCRED gives: pid, uid, gid.
UCRED = struct.Struct("3i")


class UnixPaths:
    """``/path``: a path has one owner, so the first receiver alone serves it."""

    shares_port = False

    def parse_address(self, rest: str) -> str:
        return unix_path(rest)

    def bind(self, address: str, kind: int, url: str, reuse_port: bool, socket_mode: int,
             before_bind: Callable[[socket.socket], None]) -> socket.socket:
        return bind_unix(address, kind, socket_mode, url, before_bind)

    def peer(self, sock: socket.socket) -> str:
        """The client's user: every process of one user is one peer (a path has no address to tell them by)."""
        try:
            _, uid, _ = UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
        except OSError:
            return "unknown"
        return f"uid {uid}"


UNIX_PATHS = UnixPaths()


def bind_unix(path: str, kind: int, mode: int, url: str,
              before_bind: Callable[[socket.socket], None] | None = None) -> socket.socket:
    """A Unix socket bound at ``path`` with permissions ``mode``; a stale socket there is replaced, a
    live one (another process serves it) is not."""
    if live_unix_socket(path, kind):
        raise OSError(errno.EADDRINUSE, f"cannot listen on {url}: another process serves that socket")
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, kind)
    if before_bind is not None:
        before_bind(sock)
    # Bind under a private umask, then open up to exactly ``mode``: no window with wider permissions.
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {url}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    return sock
