"""Whether the compiled parts (the receiver's window, the shard's bucket) are used where they were built.

``PYSTATSD_PURE_PYTHON=1`` in the environment turns them off: every stage then runs the Python
specification, slower but alike in what it delivers (to compare the two, or to rule the C out).
"""

from __future__ import annotations

import os


def wanted() -> bool:
    return os.environ.get("PYSTATSD_PURE_PYTHON", "").strip().lower() not in ("1", "true", "yes")
