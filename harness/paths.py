"""Where the repo and its virtualenv are, for the tests and the benchmark alike."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
