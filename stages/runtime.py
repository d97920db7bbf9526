"""What every stage process shares: arguments, logging, signals, exit codes, the run directory."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import IO

from stages.config import Config, ConfigError, config_path, load_config

EXIT_OK = 0
EXIT_SOFTWARE = 70
#: os.EX_CONFIG: supervisord sees a quick non-zero exit and ends in FATAL instead of looping.
EXIT_CONFIG = 78

log = logging.getLogger(__name__)

#: The run directory when neither ``--run-dir`` nor the config's ``run_dir`` says.
DEFAULT_RUN_DIR = Path(__file__).resolve().parent.parent / "run"


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


def load_stage_config(args: argparse.Namespace) -> Config:
    """The validated config; a problem is logged as one line and exits with EXIT_CONFIG."""
    path = config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        log.error("Config error in %s: %s", path, exc)
        raise SystemExit(EXIT_CONFIG) from None
    if args.shards < 1:
        log.error("Config error: --shards must be at least 1, got %d", args.shards)
        raise SystemExit(EXIT_CONFIG)
    log.info("Loaded config %s (flush_interval=%ss, shards=%d)", path, config.flush_interval, args.shards)
    return config


def run_dir(args: argparse.Namespace, config: Config) -> Path:
    """The run directory, created private (0700): ipc sockets are guarded by file permissions."""
    path = Path(config.run_dir or args.run_dir or DEFAULT_RUN_DIR)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    # Whoever can write here can replace a socket and feed or read the pipeline.
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        log.error("Config error: run directory %s must belong to this user and not be writable by group or "
                  "others (chmod 700 it)", path)
        raise SystemExit(EXIT_CONFIG)
    return path


def take_lock(directory: Path, name: str) -> IO[str]:
    """Hold ``name.lock`` for the life of the process: an ipc bind would silently steal a live one."""
    handle = open(directory / f"{name}.lock", "w")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("Another %s is already running with run directory %s", name, directory)
        raise SystemExit(EXIT_CONFIG) from None
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class StopSignal:
    """SIGTERM/SIGINT only set a flag and wake the loop through a socket it polls."""

    def __init__(self) -> None:
        self.requested = False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def fileno(self) -> int:
        return self._reader.fileno()

    def drain(self) -> None:
        """Empty the wakeup socket after the poller reported it readable."""
        try:
            while self._reader.recv(64):
                pass
        except BlockingIOError:
            pass
