"""A child process of a test or the benchmark (a server, a broker, a peer daemon): started with its output
in a log file, killed by the kernel if its parent dies, waited for until a check says it is ready, and
stopped as a service manager stops it.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.server_guard import refuse_in_serverless_test
from harness.wait import WaitTimeout, wait_for

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Resolved here, in the parent: looking a symbol up in a forked child could deadlock on a loader
# lock held by another thread at fork time.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:
    """A ``preexec_fn``: the kernel SIGKILLs the child if the thread that started it exits."""
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


class ProcessError(RuntimeError):
    """A child that exited before it was ready, was not ready in time, or is not running; the message
    carries the tail of its log where there is one."""


class ChildProcess:
    """One child process run in ``work_dir``, its stdout and stderr in ``work_dir/<name>.log``.

    The kernel kills it if the thread that called start() exits, so none outlives a crashed test or
    benchmark: call start() from the main thread (pytest fixtures and the benchmark do).
    """

    def __init__(self, name: str, work_dir: Path) -> None:
        self.name = name
        self.work_dir = work_dir
        self.log_path = work_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the last start, also once it exited (None before the first)."""
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, command: Sequence[str], ready: Callable[[], object], what: str, timeout: float,
              every: float = 0.1, fresh_log: bool = False) -> None:
        """Start ``command``; return once ``ready()`` is true, ``what`` saying what it checks.

        The log is appended to, so a restart keeps what the earlier runs wrote, unless ``fresh_log``
        (a reader that counts lines in it wants this run's only). A child that exits first, or is not
        ready within ``timeout`` seconds, is killed and raises ProcessError.
        """
        refuse_in_serverless_test(self.name)
        if self.running():
            raise ProcessError(f"{self.name} already running as pid {self.pid}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb" if fresh_log else "ab") as out:  # the child holds its own copy
            self.proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.work_dir, preexec_fn=die_with_parent)
        try:
            wait_for(lambda: self._still_starting() and ready(), timeout, f"{self.name}: {what}", every)
        except WaitTimeout as exc:
            self.kill()
            raise ProcessError(f"{exc}\n{self.log_tail()}") from None
        except BaseException:
            self.kill()
            raise

    def _still_starting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ProcessError(f"{self.name} exited with {self.proc.returncode} during start-up\n{self.log_tail()}")
        return True

    def stop(self, timeout: float) -> None:
        """SIGTERM, as a service manager stops it; SIGKILL if it has not exited after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %ss; killing it", self.name, self.proc.pid, timeout)
            self.kill()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait()

    def send_signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise ProcessError(f"{self.name} is not running")
        self.proc.send_signal(sig)

    def log_text(self, last_chars: int | None = None) -> str:
        """What the child wrote (the last ``last_chars`` of it), "" before it wrote anything."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text if last_chars is None else text[-last_chars:]

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, for error messages."""
        try:
            with open(self.log_path, errors="replace") as f:
                tail = deque(f, maxlen=lines)
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "".join(tail)
