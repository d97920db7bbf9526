"""Moved to :mod:`stages.lifecycle`, the one stage lifecycle; kept only for stages/cli.py's import.

Once stages/cli.py imports these names from :mod:`stages.lifecycle`, this module goes.
"""

from __future__ import annotations

from stages.lifecycle import DEFAULT_RUN_DIR, EXIT_CONFIG, EXIT_OK, EXIT_SOFTWARE

__all__ = ["DEFAULT_RUN_DIR", "EXIT_CONFIG", "EXIT_OK", "EXIT_SOFTWARE"]
