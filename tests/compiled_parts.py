"""The compiled parts' test marks, one per part (tests/conftest.py says what the ``compiled`` marker does)."""

from __future__ import annotations

import pytest

from stages.aggregator.series import CompiledBucket
from stages.receiver.window import CompiledWindow

needs_compiled_window = pytest.mark.compiled(CompiledWindow, "the compiled window (stages/receiver/window.c)")
needs_compiled_bucket = pytest.mark.compiled(CompiledBucket, "the compiled bucket (stages/aggregator/bucket.c)")
