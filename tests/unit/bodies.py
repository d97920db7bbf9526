"""Batch bodies for shard tests, made the way a receiver makes them: samples through a window."""

from __future__ import annotations

from stages.common import contract
from stages.common.contract import BatchBody
from stages.common.model import Sample
from stages.receiver.window import PyWindow


def _no_lines(data: bytes, out: list[Sample], bad: dict[str, int]) -> None:
    raise AssertionError("these windows are only given samples")


def bodies_of(samples: list[Sample]) -> list[BatchBody]:
    """The bodies one shard gets for ``samples`` read in one batch window."""
    window = PyWindow(1, (), _no_lines)
    for sample in samples:
        window.add(sample)
    return [contract.decode_batch_body(body) for body, *_ in window.take(1_000_000)[0]]


def one_body(samples: list[Sample]) -> bytes:
    """The single body frame of ``samples`` (an empty one when there are none)."""
    bodies = bodies_of(samples)
    return contract.pack_batch_body(bodies[0] if bodies else BatchBody.empty())


def one_batch(samples: list[Sample]) -> tuple[bytes, int, bytes]:
    """The single body frame of ``samples`` (not empty), its entries and its header's ``entry_metrics``."""
    window = PyWindow(1, (), _no_lines)
    for sample in samples:
        window.add(sample)
    ((body, entries, _, _, entry_metrics),) = window.take(1_000_000)[0]
    return body, entries, entry_metrics
