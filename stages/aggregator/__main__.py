"""``python -m stages.aggregator``: see :mod:`stages.aggregator.shard_loop` (what it does) and
:mod:`stages.aggregator.stage` (how it starts and stops)."""

import sys

from stages.aggregator.stage import main

if __name__ == "__main__":
    sys.exit(main())
