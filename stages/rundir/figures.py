"""Each stage's latest figures, published as a small JSON file in the run directory.

A stage replaces ``<run>/figures/<stage>.json`` every interval (atomically, never through a link:
stages.rundir.private_file), so ``pystatsd status`` and the health endpoint can read every stage's state
without a socket of their own. A file that is not refreshed tells that its stage is gone or stuck.
Each record names the schema its figures follow (stages.common.figure_schemas), and they are checked
against it: a mismatch raises in strict mode (stages.common.strict), else it is logged once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.common.figure_schemas import Schema, problems
from stages.common.strict import strict_by_default
from stages.rundir.private_file import make_private_dir, read_private, write_private

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"
#: The one figure of a stage that could not start: why (its error line).
START_ERROR = "start_error"
#: When this process image started: a stage restarted in place (an exec, the same pid) starts anew.
STARTED = time.time()
#: Schemas whose figures were logged as not as declared (once each).
_mismatch_logged: set[str] = set()


class FiguresNotAsDeclared(ValueError):
    """A stage published figures that differ from their schema in stages/common/figure_schemas.py."""


def publish(run_dir: Path, stage: str, schema: Schema, figures: Mapping[str, object]) -> None:
    """Replace ``stage``'s figures, which follow ``schema``; a failure to write is logged, never raised
    (figures must not stop a stage), and so are figures not as declared, but in strict mode."""
    mismatch = problems(schema, dict(figures))
    if mismatch:
        if strict_by_default():
            raise FiguresNotAsDeclared(f"{stage}'s figures: {'; '.join(mismatch)}")
        if schema not in _mismatch_logged:
            _mismatch_logged.add(schema)
            log.error("%s's figures are not as stages/common/figure_schemas.py declares them: %s", stage,
                      "; ".join(mismatch))
    directory = run_dir / FIGURES_DIR
    record = {"stage": stage, "schema": schema, "pid": os.getpid(), "started": STARTED, "updated": time.time(),
              "figures": figures}
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
