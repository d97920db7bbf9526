"""``python -m stages.forwarder``: see :mod:`stages.forwarder.forwarder_loop` (what it does) and
:mod:`stages.forwarder.stage` (how it starts and stops)."""

import sys

from stages.forwarder.stage import main

if __name__ == "__main__":
    sys.exit(main())
