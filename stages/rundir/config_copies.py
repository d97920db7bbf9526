"""The running instance's config, as copies in its run directory: what it started with and what it
runs now (after reloads), so that ``pystatsd reload`` can say what a new config changes.

The forwarder keeps them (it runs for as long as the instance does); they hold secrets, so they
are private, in the private run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages.common.config import Config, ConfigError, load_config
from stages.rundir.private_file import read_private, write_private

log = logging.getLogger(__name__)

STARTED = "config.started.yaml"
RUNNING = "config.running.yaml"
#: The path of the file the stages read (at start and at every reload).
SOURCE = "config.source"


def keep_copy(run_dir: Path, name: str, source: Path, data: bytes) -> None:
    """Keep ``data``, the config as read from the file ``source``, as ``name`` in ``run_dir`` (atomically;
    a failure is logged)."""
    keep(run_dir / name, data)
    keep(run_dir / SOURCE, str(source.absolute()).encode())


def source_of(run_dir: Path) -> Path | None:
    """The config file the instance in ``run_dir`` reads, if it said."""
    try:
        return Path(read_private(run_dir / SOURCE).decode())
    except OSError:
        return None


def keep(target: Path, data: bytes) -> None:
    try:
        write_private(target, data)
    except OSError as exc:
        log.warning("Cannot keep a copy of the config in %s: %s", target, exc.strerror)


def load_copy(run_dir: Path, name: str) -> Config | None:
    """The config copy ``name`` of the instance in ``run_dir``; None when there is none to read."""
    path = run_dir / name
    if not path.exists():
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        log.warning("Cannot read %s: %s", path, exc)
        return None
