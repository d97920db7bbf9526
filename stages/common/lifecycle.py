"""One stage process from start to exit: the lifecycle the receiver, each shard and the forwarder share.

A stage is a :class:`Stage` subclass that says only what is its own: its name, its extra
arguments, the checks its arguments need, the lock it holds, and how to build its loop (an object
with ``run(stop)``, which runs until the stop signal and then stops itself). :func:`run_stage` does
everything else, once for every stage, in this order:

0. umask 077, whatever started the process;
1. the common arguments (``--config``, ``--shards``, ``--run-dir``) and the stage's own;
2. logging on stderr, one line per record, named after the stage (``PYSTATSD_LOG_LEVEL``);
3. the config, validated: a problem is one line and exit 78 (:data:`EXIT_CONFIG`);
4. the stage's own checks (:meth:`Stage.check`);
5. the run directory, private to this user, or refused (stages.rundir.run_dir_check);
6. the stage's lock, when it binds a socket another copy must not steal;
7. SIGTERM and SIGINT (stop) and SIGHUP (reload), which only set a flag the loop polls
   (:class:`StopSignal`);
8. a ZeroMQ context and the stage's loop on it (:meth:`Stage.start`);
9. the loop, until the stop signal, and its own stop;
10. :meth:`Stage.close`, the context (which waits out the sockets' linger), a last line, the lock,
    exit 0; or, when the loop ended to restart in place (:meth:`Stage.restart_in_place`), an exec
    of the stage anew in the same process.

A stage that cannot start raises :class:`StartError` from :meth:`Stage.check` or
:meth:`Stage.start`: its message is logged by the stage's own logger and the process exits 78, so
supervisord gives up on it (FATAL) instead of restarting it in a loop.

How long a stop may take is the sum of the timeouts it is made of: :data:`STOP_BUDGET_SECS` adds
them up per stage, and supervisord's ``stopwaitsecs`` for the stage's programs must leave at least
:data:`STOP_MARGIN_SECS` beyond (``tests/unit/test_lifecycle.py`` checks ``supervisord.conf``).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import socket
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, NoReturn, Protocol

import zmq

from stages.common.config import Config, ConfigError, config_path, read_config
from stages.common.config_diff import reloadable
from stages.common.process_names import process_name
from stages.rundir.figures import START_ERROR, clear_start_error, publish
from stages.rundir.private_file import open_private
from stages.rundir.run_dir_check import make_run_dir, run_dir_problems

EXIT_OK = 0
EXIT_SOFTWARE = 70
#: os.EX_CONFIG: supervisord sees a quick non-zero exit and ends in FATAL instead of looping.
EXIT_CONFIG = 78

log = logging.getLogger(__name__)

#: The run directory when neither ``--run-dir`` nor the config's ``run_dir`` says.
DEFAULT_RUN_DIR = Path(__file__).resolve().parents[2] / "run"

# --- Stop budgets -------------------------------------------------------------------------------
# The timeouts each stage's stop is made of, each stage's beside the sum of them. They live here, by
# the table below, so a change to one shows against supervisord.conf's stopwaitsecs (past which
# supervisord SIGKILLs the stage, and what it still held is lost).


@dataclass(frozen=True)
class ReceiverStop:
    #: How long ZeroMQ may take to hand the last batches to the shards (every socket lingers at
    #: once, in ZeroMQ's I/O thread, while the context terminates).
    linger_ms: int = 2000

    @property
    def budget_secs(self) -> float:
        return self.linger_ms / 1000


@dataclass(frozen=True)
class ShardStop:
    #: How long a shard stopping for a restart waits at most for the receivers to pause (stages.rundir.pause).
    pause_max_secs: float = 1.0
    #: How long without a batch ends the drain of what had arrived before the unbind.
    drain_quiet_secs: float = 0.2
    #: How long it keeps trying to hand its last flushes to the forwarder; and again how long
    #: ZeroMQ then lingers on what it took of them while the context terminates.
    linger_ms: int = 5000

    @property
    def budget_secs(self) -> float:
        return self.pause_max_secs + self.drain_quiet_secs + 2 * self.linger_ms / 1000

    @property
    def hold_secs(self) -> float:
        """How long the receivers hold a stopping shard's batches at most: its pause, drain and hand-off
        with room to spare (the shard ends the pause sooner, once it has closed its socket)."""
        return self.pause_max_secs + self.drain_quiet_secs + 3.0


@dataclass(frozen=True)
class ForwarderStop:
    #: How long a forwarder stopping for a restart waits at most for every shard to pause (stages.rundir.pause).
    pause_max_secs: float = 3.0
    #: How long without a flush means no shard is still stopping (within ``wait_finals_secs``).
    quiet_secs: float = 1.0
    #: The longest it waits for the shards' final flushes.
    wait_finals_secs: float = 10.0
    #: What the sinks get to deliver their queues once it stops taking flushes. A reload gives a
    #: removed sink the same drain, and a changed sink's successor waits at most this long for the
    #: old instance's last write: both end before a later stop's drain does, so they add nothing here.
    sink_drain_secs: float = 20.0
    #: What the sinks' threads get past that deadline before those still stuck in a write are
    #: abandoned: one deadline for all of them (``Fanout.stop``), however many are stuck.
    sink_join_slack_secs: float = 1.0

    @property
    def budget_secs(self) -> float:
        # A stop waits for the shards' pause (a restart) or for their final flushes (the pipeline stops).
        return (max(self.pause_max_secs, self.wait_finals_secs) + self.sink_drain_secs
                + self.sink_join_slack_secs)

    @property
    def hold_secs(self) -> float:
        """How long the shards hold their flushes at most for a forwarder restarting: its whole stop and
        a start, with room to spare (its next instance ends the pause sooner, once it has bound)."""
        return self.budget_secs + STOP_MARGIN_SECS + 10.0


RECEIVER_STOP = ReceiverStop()
SHARD_STOP = ShardStop()
FORWARDER_STOP = ForwarderStop()

#: Stage (its ``python -m stages.<stage>``) → the longest its stop takes by its timeouts, in
#: seconds. Each [program:*] of that stage in supervisord.conf has stopwaitsecs of at least this
#: plus STOP_MARGIN_SECS (tests/unit/test_lifecycle.py reads the file and checks).
STOP_BUDGET_SECS: dict[str, float] = {
    "receiver": RECEIVER_STOP.budget_secs,
    "aggregator": SHARD_STOP.budget_secs,
    "forwarder": FORWARDER_STOP.budget_secs,
}
#: Stage → how much lower than supervisord's its scheduling priority is (nice). The receiver alone
#: reads what the kernel drops when it is not read in time; the shards hold their work in bounded,
#: counted queues. When they share a core (a flush of every shard at each interval edge), the kernel
#: then runs the receiver first and the flushes in what it leaves. The forwarder too: its sinks
#: hold bounded, counted queues, and a planned restart pauses the shards first (stages.rundir.pause), so a
#: forwarder starved for a while delays its flushes and loses none of them.
NICENESS: dict[str, int] = {"receiver": 0, "aggregator": 10, "forwarder": 10}

#: What stopwaitsecs leaves beyond a stage's budget for the work no timeout bounds: the receiver
#: reading what the kernel holds, a shard merging what had arrived and building its final flushes,
#: the interpreter's exit.
STOP_MARGIN_SECS = 3.0


class StartError(Exception):
    """The stage cannot start; ``message % args`` is logged by the stage's logger, the exit is 78."""

    def __init__(self, message: str, *args: object) -> None:
        super().__init__(message % args if args else message)
        self.message = message
        self.args_ = args


class Loop(Protocol):
    """What a stage runs: its work until ``stop.requested``, then its own stop (handing on what it holds)."""

    def run(self, stop: StopSignal) -> None: ...


class Stage(ABC):
    """One kind of stage process: only what is its own; :func:`run_stage` does the rest. What every
    stage must say is said in its class line: ``class XStage(Stage, stage=..., description=..., log=log)``."""

    #: Its ``python -m stages.<stage>``: the key of its row in STOP_BUDGET_SECS.
    stage: ClassVar[str]
    #: The help text of its command line.
    description: ClassVar[str]
    #: Its module's logger: the lifecycle's lines about this stage (start errors, stopped) go there.
    log: ClassVar[logging.Logger]
    #: The bytes of the config file as this process read them at its start (the file may change after).
    config_source: bytes = b""

    def __init_subclass__(cls, *, stage: str, description: str, log: logging.Logger, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.stage, cls.description, cls.log = stage, description, log

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027 - an optional hook, empty by design
        """Arguments beyond the common ones; none unless a stage says."""

    def name(self, args: argparse.Namespace) -> str:
        """This process's name in its log lines (and figures); its stage's only process unless it says."""
        return process_name(self.stage)

    def lock_name(self, args: argparse.Namespace) -> str | None:
        """The lock file (``<name>.lock`` in the run directory) it holds while it lives; None: no lock."""
        return None

    def check(self, args: argparse.Namespace, config: Config) -> None:  # noqa: B027 - an optional hook, empty by design
        """Refuse arguments or config this stage cannot run with (raise StartError); before any resource."""

    @abstractmethod
    def start(self, args: argparse.Namespace, config: Config, run: Path, ctx: zmq.Context[zmq.Socket[bytes]]) -> Loop:
        """Open this stage's sockets and build its loop; raise StartError when it cannot."""

    def close(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Release what :meth:`start` opened beside the loop, once the loop has stopped."""

    def restart_in_place(self) -> bool:
        """True when its loop ended to be replaced by a new image of this process (same pid, so
        supervisord sees no exit; descriptors the loop made inheritable stay open)."""
        return False

    def stopped(self) -> None:
        """The last line of its log."""
        self.log.info("Stopped")


def run_stage(stage: Stage, argv: list[str] | None = None) -> int:
    """Run ``stage`` from its command line to its exit code (see the module docstring for the steps)."""
    # Whatever started it (supervisord as a daemon, in the foreground, by hand): sockets, logs, the
    # ledger, hand-offs and a file sink's output are this user's alone.
    os.umask(0o077)
    parser = stage_arguments(stage.description)
    stage.add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(stage.name(args))
    yield_to_the_receiver(stage.stage)
    try:
        config, stage.config_source = load_stage_config(args)
        stage.check(args, config)
        run = run_dir(args, config)
        lock_name = stage.lock_name(args)
        lock = take_lock(run, lock_name) if lock_name is not None else None
    except StartError as exc:
        return start_failed(stage, args, exc)
    stop = StopSignal()
    try:
        code = _run(stage, args, config, run, stop)
    finally:
        stop.close()
        if lock is not None:
            lock.close()
    if code == EXIT_OK and stage.restart_in_place():
        become_again(stage, sys.argv[1:] if argv is None else argv)
    return code


def yield_to_the_receiver(stage: str) -> None:
    """Run ``stage`` at its :data:`NICENESS` below its parent (supervisord), whatever nice this
    process already has: an image exec'd in place gets the same, not ten more."""
    try:
        base = os.getpriority(os.PRIO_PROCESS, os.getppid())
        os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), base + NICENESS[stage]))
    except OSError as exc:  # a parent gone or not ours to read: the stage runs as it is
        log.warning("Scheduling priority left as it is: %s", exc.strerror)


def become_again(stage: Stage, argv: list[str]) -> NoReturn:
    """Exec this stage anew in this process: new code and config, the same pid and inherited sockets."""
    stage.log.info("Restarting in place")
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, "-m", f"stages.{stage.stage}", *argv])


def _run(stage: Stage, args: argparse.Namespace, config: Config, run: Path, stop: StopSignal) -> int:
    """Steps 8 to 10: the stage's loop on a ZeroMQ context, until the stop signal."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        loop = stage.start(args, config, run, ctx)
    except StartError as exc:
        ctx.destroy(linger=0)
        return start_failed(stage, args, exc, run)
    clear_start_error(run, stage.name(args))
    loop.run(stop)
    stage.close()
    # Waits until every socket's last messages are handed on or its linger has passed.
    ctx.term()
    if not stage.restart_in_place():
        stage.stopped()
    return EXIT_OK


def start_failed(stage: Stage, args: argparse.Namespace, exc: StartError, run: Path | None = None) -> int:
    """Log why ``stage`` cannot start and leave the reason in its figures, where ``pystatsd status``
    shows it (into ``run``, else the run directory of its command line); EXIT_CONFIG."""
    stage.log.error(exc.message, *exc.args_)
    run = run or Path(args.run_dir or DEFAULT_RUN_DIR)
    # Only into a run directory this stage could have used: a refused one is not written to.
    if run.is_dir() and not run_dir_problems(run):
        publish(run, stage.name(args), "start_error", {START_ERROR: str(exc)})
    return EXIT_CONFIG


def stage_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", help="config file (default: $PYSTATSD_CONFIG, "
                        "/etc/pystatsd/pystatsd.conf, then the repo's etc/pystatsd.yaml)")
    parser.add_argument("--shards", type=int, required=True, help="number of aggregator shards")
    parser.add_argument("--run-dir", help="directory for ipc sockets and lock files")
    return parser


def setup_logging(stage: str) -> None:
    """One line per record on stderr, which supervisord captures per program."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {stage} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = os.environ.get("PYSTATSD_LOG_LEVEL", "INFO").upper()
    root.setLevel(level)
    # kafka-python logs every reconnect attempt; the Kafka sink reports outages itself, once a minute.
    if level != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


class RedactSecrets(logging.Filter):
    """The second net behind the Secret type: masks known secret values in every record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            masked = masked.replace(secret, "***")
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def redact_in_logs(secrets: list[str]) -> None:
    """Mask ``secrets`` in everything any logger writes from now on."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets(secrets))


def load_stage_config(args: argparse.Namespace) -> tuple[Config, bytes]:
    """The validated config and the bytes it was read from; a problem is logged as one line and exits with
    EXIT_CONFIG."""
    path = config_path(args.config)
    try:
        config, source = read_config(path)
    except ConfigError as exc:
        raise StartError("Config error in %s: %s", path, exc) from None
    if args.shards < 1:
        raise StartError("Config error: --shards must be at least 1, got %d", args.shards)
    log.info("Loaded config %s (flush_interval=%ss, shards=%d)", path, config.flush_interval, args.shards)
    return config, source


def reread_config(path: Path, running: Config, stage_log: logging.Logger) -> Config | None:
    """The config at ``path`` as a reload applies it over ``running``; None when it is not valid (the
    running config is kept). Both, and every change that waits for a restart, are logged."""
    reread = reread_config_file(path, running, stage_log)
    return None if reread is None else reread[0]


def reread_config_file(path: Path, running: Config, stage_log: logging.Logger) -> tuple[Config, bytes] | None:
    """:func:`reread_config`, and the bytes it was read from."""
    try:
        new, source = read_config(path)
    except ConfigError as exc:
        stage_log.error("Reload refused, the running config is kept: %s", exc)
        return None
    applied = reloaded(running, new, stage_log)
    stage_log.info("Reloaded config %s", path)
    return applied, source


def reloaded(running: Config, new: Config, stage_log: logging.Logger) -> Config:
    """``new`` as a reload applies it over ``running``; each change that waits for a restart logged."""
    applied, waiting = reloadable(running, new)
    for change in waiting:
        stage_log.warning("Reload: %s changed (%s -> %s); it applies at the next pystatsd run, not now",
                          change.key, change.old, change.new)
    return applied


def run_dir(args: argparse.Namespace, config: Config) -> Path:
    """The run directory, made private (0700) unless stages.rundir.run_dir_check refuses it: ipc sockets are
    guarded by file permissions, and nothing there may lead root's writes elsewhere."""
    path = Path(config.run_dir or args.run_dir or DEFAULT_RUN_DIR)
    problems = make_run_dir(path)
    if problems:
        raise StartError("Config error: %s", "; ".join(problems))
    return path


def take_lock(directory: Path, name: str) -> IO[str]:
    """Hold ``name.lock`` for the life of the process: an ipc bind would silently steal a live one."""
    path = directory / f"{name}.lock"
    try:
        fd = open_private(path, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise StartError("Cannot open the lock %s: %s", path, exc.strerror) from None
    handle = os.fdopen(fd, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StartError("Another %s is already running with run directory %s", name, directory) from None
    # Truncated only once held: the holder's pid is not wiped by a copy that is refused.
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class PullWakeups:
    """What a stage that takes messages on a PULL socket waits on: that socket and its signals."""

    def __init__(self, pull: zmq.Socket[bytes], stop: StopSignal) -> None:
        self.pull, self.stop = pull, stop
        self.poller = zmq.Poller()
        self.poller.register(pull, zmq.POLLIN)
        self.poller.register(stop.fileno(), zmq.POLLIN)

    def wait(self, timeout_ms: float) -> bool:
        """Wait up to ``timeout_ms`` for a message or a signal; whether messages are waiting."""
        events = dict(self.poller.poll(int(max(0.0, timeout_ms))))
        if self.stop.fileno() in events:
            self.stop.drain()
        return self.pull in events


class StopSignal:
    """SIGTERM/SIGINT (stop) and SIGHUP (reload) only set a flag and wake the loop through a socket it polls."""

    def __init__(self) -> None:
        self.requested = False
        #: SIGHUP came: the stage re-reads its config (the receiver restarts in place to do so).
        self.reload_requested = False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.requested = True

    def take_reload(self) -> bool:
        """Whether a SIGHUP came since the last call."""
        reload, self.reload_requested = self.reload_requested, False
        return reload

    def fileno(self) -> int:
        return self._reader.fileno()

    def drain(self) -> None:
        """Empty the wakeup socket after the poller reported it readable."""
        try:
            while self._reader.recv(64):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Stop waking anything (the signals keep only setting the flag); close the wakeup socket."""
        signal.set_wakeup_fd(-1)
        self._reader.close()
        self._writer.close()
