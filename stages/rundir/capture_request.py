"""A capture request: ``pystatsd capture`` asks the running receivers for what they read, through a file.

The command binds a ZeroMQ PULL socket and writes ``capture.json`` in the run directory: the socket's
endpoint, the listener wanted (or all), its own pid and until when. Every receiver looks at the file at
most every :data:`stages.rundir.ring.CHECK_EVERY_SECS` (as at its pause files), and while the request
holds it pushes each burst it reads to that socket (:mod:`stages.common.capture_wire`). A request ends
when its file is removed (the command does at its end), its ``until`` passes or its pid is gone (a
command killed leaves its file behind), so a receiver never sends for long to nobody.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from stages.rundir.private_file import read_private, write_private
from stages.rundir.ring import CHECK_EVERY_SECS  # the receivers look at it as often as at the ring file

CAPTURE_FILE = "capture.json"


@dataclass(frozen=True)
class CaptureRequest:
    #: Names this request: a new one is a new capture, even at the same endpoint.
    id: str
    endpoint: str
    #: Unix time after which the receivers stop sending, whatever became of the command.
    until: float
    pid: int
    #: The listener URL to capture, or None for every listener.
    listener: str | None

    def holds(self, now: float) -> bool:
        """Whether it still asks at ``now``: not past ``until``, and its command alive."""
        return now < self.until and pid_alive(self.pid)


def capture_path(run_dir: Path) -> Path:
    return run_dir / CAPTURE_FILE


def capture_endpoint(run_dir: Path, pid: int) -> str:
    """Where the command with ``pid`` takes what the receivers send (a socket of the run directory)."""
    return f"ipc://{run_dir / f'capture-{pid}.sock'}"


def write_request(run_dir: Path, request: CaptureRequest) -> None:
    """OSError if it cannot be written."""
    write_private(capture_path(run_dir), json.dumps(request.__dict__).encode())


def read_request(run_dir: Path) -> CaptureRequest | None:
    """The request in ``run_dir``, or None (no file, not one pystatsd wrote, or an endpoint other than
    the command's socket in this run directory: a receiver sends what it reads nowhere else)."""
    try:
        raw = json.loads(read_private(capture_path(run_dir)))
        listener, pid = raw["listener"], int(raw["pid"])
        request = CaptureRequest(str(raw["id"]), str(raw["endpoint"]), float(raw["until"]), pid,
                                 None if listener is None else str(listener))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return request if request.endpoint == capture_endpoint(run_dir, pid) else None


def end_request(run_dir: Path, request_id: str) -> None:
    """Remove the request file if it is still ``request_id``'s."""
    current = read_request(run_dir)
    if current is not None and current.id == request_id:
        capture_path(run_dir).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CaptureWatch:
    """A receiver's view of the request file, looked at no more than every CHECK_EVERY_SECS."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.next_check = 0.0
        self.request: CaptureRequest | None = None

    def current(self, now: float) -> CaptureRequest | None:
        """The request that holds at ``now``, or None."""
        if now >= self.next_check:
            self.next_check = now + CHECK_EVERY_SECS
            request = read_request(self.run_dir)
            self.request = request if request is not None and request.holds(now) else None
        return self.request
