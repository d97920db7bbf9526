"""pytest wiring for the whole suite: the ``compiled`` marker.

``@pytest.mark.compiled(part, what)`` marks a test that needs a compiled part: ``part`` is what the
import gave (None when the extension was not built), ``what`` names it. The build makes the compiled
parts optional (a machine without a compiler still runs the daemon), so a C change that stops compiling
only makes them missing. Where CI runs (``CI=true``) every part is required and its tests fail, so that
cannot pass green; elsewhere they are skipped, and the skip says why.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "compiled(part, what): needs a compiled part; fails where CI=true "
                                       "when it was not built, skips elsewhere")


def compiled_required() -> bool:
    """Whether this run requires every compiled part: it does where CI runs."""
    return os.environ.get("CI") == "true"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("compiled"):
        part, what = mark.args
        if part is not None:
            continue
        missing = f"{what} was not built (make install's compiler output says why)"
        if compiled_required():
            pytest.fail(f"{missing}: required where CI runs (CI=true)", pytrace=False)
        pytest.skip(missing)
