"""The smoke run's verdict on one run (bench/run.py smoke_verdict): exact, a peer short by what the kernel
dropped on its socket, or a mismatch."""

from __future__ import annotations

import dataclasses

import pytest

from bench.run import smoke_verdict
from tests.bench.test_rate_search import run_at

EXACT = run_at(10_000, 0.0)


@pytest.mark.parametrize(("delivered", "kernel_drops", "peer", "verdict"), [
    (EXACT.sent, 0, False, "OK"),
    (EXACT.sent, 3, True, "OK"),
    (EXACT.sent - 60, 3, True, "SHORT, the kernel dropped 3 datagrams on its socket"),
    # a shortfall the kernel did not cause is the benchmark's miscount, or a loss nobody counted
    (EXACT.sent - 60, 0, True, "MISMATCH"),
    # pystatsd accounts for its kernel drops itself: it must be exact
    (EXACT.sent - 60, 3, False, "MISMATCH"),
    (EXACT.sent + 1, 3, True, "MISMATCH"),
])
def test_smoke_verdict(delivered: float, kernel_drops: int, peer: bool, verdict: str) -> None:
    run = dataclasses.replace(EXACT, delivered=delivered, kernel_drops=kernel_drops)
    assert smoke_verdict(run, peer) == verdict
