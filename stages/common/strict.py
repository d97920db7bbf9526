"""Whether a stage's declarations are enforced: a self-metric or a figure not as declared raises.

The test harness sets ``PYSTATSD_STRICT=1`` for every stage it starts, so a test that runs a
stage fails on such a bug; in production the mismatch is logged and the value kept (a figure or a
self-metric must never stop a stage).
"""

from __future__ import annotations

import os

STRICT_ENV = "PYSTATSD_STRICT"


def strict_by_default() -> bool:
    return os.environ.get(STRICT_ENV) == "1"
