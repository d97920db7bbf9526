"""``python -m stages.receiver``: see :mod:`stages.receiver.receiver_loop` (what it does) and
:mod:`stages.receiver.stage` (how it starts and stops)."""

import sys

from stages.receiver.stage import main

if __name__ == "__main__":
    sys.exit(main())
