"""Where the repo, its virtualenv and the download cache are, for the tests and the benchmark alike."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
#: What the tests and the benchmark download and build (the Kafka jars, the peers), outside the clone:
#: a fresh clone on the same machine reuses it. PYSTATSD_CACHE overrides; tests/kafka/fetch_jars.sh
#: spells the same default.
CACHE = Path(os.environ.get("PYSTATSD_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pystatsd")
