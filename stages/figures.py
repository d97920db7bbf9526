"""Each stage's latest figures, published as a small JSON file in the run directory.

A stage replaces ``<run>/figures/<stage>.json`` every interval (atomically, never through a link:
stages.private_file), so ``pystatsd status`` and the health endpoint can read every stage's state
without a socket of their own. A file that is not refreshed tells that its stage is gone or stuck.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from stages.private_file import make_private_dir, read_private, write_private

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"
#: The one figure of a stage that could not start: why (its error line).
START_ERROR = "start_error"
#: When this process image started: a stage restarted in place (an exec, the same pid) starts anew.
STARTED = time.time()


def publish(run_dir: Path, stage: str, figures: dict[str, Any]) -> None:
    """Replace ``stage``'s figures; a failure is logged, never raised (figures must not stop a stage)."""
    directory = run_dir / FIGURES_DIR
    record = {"stage": stage, "pid": os.getpid(), "started": STARTED, "updated": time.time(), "figures": figures}
    try:
        write_private(make_private_dir(directory) / f"{stage}.json", json.dumps(record, sort_keys=True).encode())
    except OSError as exc:
        log.warning("Cannot publish figures to %s: %s", directory, exc.strerror)


def read_all(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every stage's last published record, by stage name."""
    records = {}
    for path in sorted((run_dir / FIGURES_DIR).glob("*.json")):
        record = _read(path)
        if record is not None:
            records[record.get("stage", path.stem)] = record
    return records


def clear_start_error(run_dir: Path, stage: str) -> None:
    """Forget why an earlier process of ``stage`` could not start: this one did."""
    path = run_dir / FIGURES_DIR / f"{stage}.json"
    record = _read(path)
    if record is not None and START_ERROR in record.get("figures", {}):
        path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(read_private(path))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
