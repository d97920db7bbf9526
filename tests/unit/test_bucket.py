"""The compiled bucket (bucket.c) holds exactly what IntervalBucket.merge holds, and flushes the same aggregates.

Batches come from real windows fed hand-picked and random lines, over several series limits (so
that series fold into their overflow series, and overflow keys also arrive as themselves).
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.aggregator.histogram_bounds import BucketBounds
from stages.aggregator.series import IntervalBucket, SeriesLimit
from stages.common import contract
from stages.common.config import HistogramBuckets
from stages.common.contract import BatchBody, DecodeError
from stages.common.model import series_key
from stages.receiver.parsers import payload_parser, statsd_lines
from stages.receiver.window import PyWindow, take_payloads
from tests.compiled_parts import needs_compiled_bucket
from tests.unit.lines import LINES, OTHER, generated_lines, payload

pytestmark = needs_compiled_bucket

OVERFLOW = ("pystatsd_overflow", "true")
#: Lines whose series a small limit folds: many tags of one name, and the overflow series itself.
CARDINAL = [f"card:{i}|c|#user:u{i}" for i in range(6)] + [f"card:{i}.5|ms|#user:u{i}" for i in range(6)] + [
    "card:7|c|#pystatsd_overflow:true", "card:1|g|#user:u9", "card:+1|g|#user:u9", "card:x|s|#user:u1"]


#: Every timer-like counted into buckets (one of them, ``card``, into bounds of its own).
BOUNDS = BucketBounds([HistogramBuckets("card", [0.5, 1.5, 2.5]), HistogramBuckets("*", [-1.0, 0.0, 1.0, 10.0, 1e6])])


def bodies(payloads: list[bytes], max_entries: int) -> list[bytes]:
    window = PyWindow(1, (), statsd_lines({}))
    take_payloads(window, payloads, payload_parser({}), {})
    return [body for body, *_ in window.take(max_entries)[0]]


def both(frames: list[bytes], limit: int) -> tuple[IntervalBucket, IntervalBucket]:
    python = IntervalBucket(SeriesLimit(limit, OVERFLOW), compiled=False)
    compiled = IntervalBucket(SeriesLimit(limit, OVERFLOW))
    for frame in frames:
        python.merge_frame(frame)
        compiled.merge_frame(frame)
    python.close()
    compiled.close()
    return python, compiled


def sampled(bucket: IntervalBucket) -> list[tuple[int, list[tuple[str, bytes, float]]]]:
    """The timer-likes in order, their packed values joined (the Python keeps one piece per batch)."""
    return [(mtype, [(key, b"".join(packed), count) for key, (packed, count) in of_type.items()])
            for mtype, of_type in bucket.sampled.items()]


def assert_same(frames: list[bytes], limit: int) -> IntervalBucket:
    python, compiled = both(frames, limit)
    for table in ("counters", "gauge_changes", "sets", "traces"):
        assert list(getattr(compiled, table).items()) == list(getattr(python, table).items()), table
    assert sampled(compiled) == sampled(python)
    assert compiled.aggregates(10.0, 10.0, [50.0, 90.0]) == python.aggregates(10.0, 10.0, [50.0, 90.0])
    assert compiled.aggregates(10.0, 10.0, [50.0], BOUNDS) == python.aggregates(10.0, 10.0, [50.0], BOUNDS)
    assert (compiled.limit.per_name, compiled.limit.folded) == (python.limit.per_name, python.limit.folded)
    return python


def test_hand_picked_lines_hold_the_same() -> None:
    python = assert_same(bodies([payload(LINES + OTHER)] * 3, max_entries=5), limit=10_000)
    assert python.counters and python.sampled and python.gauge_changes and python.sets


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_series_beyond_the_limit_fold_alike(limit: int) -> None:
    frames = bodies([payload(CARDINAL), payload(CARDINAL[::-1])], max_entries=4)
    python = assert_same(frames, limit)
    assert python.limit.folded


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(generated_lines(), st.sampled_from(LINES + OTHER + CARDINAL)), min_size=1,
                         max_size=15), min_size=1, max_size=6), st.integers(1, 12), st.sampled_from([1, 3, 10_000]))
def test_random_batches_hold_the_same(datagrams, max_entries, limit) -> None:
    assert_same(bodies([payload(lines) for lines in datagrams], max_entries), limit)


def test_a_key_that_arrives_as_its_own_overflow_series_is_admitted_alike() -> None:
    overflow = series_key("n", OVERFLOW)
    frames = [contract.pack_batch_body(BatchBody(["n\x1fu\x1f1", 1.0, "n\x1fu\x1f2", 2.0, overflow, 4.0],
                                                 [], [], [], []))] * 2
    python = assert_same(frames, limit=1)
    assert python.counters == {"n\x1fu\x1f1": 2.0, overflow: 12.0}


@pytest.mark.parametrize("body", [
    [[], [], [], []], [["k", 1.0, "x"], [], [], [], []], [[], ["k", True], [], [], []],
    [[], [], ["k", 9, 1.0, b""], [], []], [[], [], ["k", 4, 1.0, b"\x00" * 7], [], []],
    [[5, 1.0], [], [], [], []], [["k", "one"], [], [], [], []], {"counters": []},
])
def test_a_malformed_body_is_refused_by_both(body: object) -> None:
    frame = msgpack.packb(body, use_bin_type=True)
    for compiled in (False, True):
        bucket = IntervalBucket(SeriesLimit(10, OVERFLOW), compiled=compiled)
        with pytest.raises((ValueError, TypeError, AttributeError, DecodeError)):
            bucket.merge_frame(frame)


def test_bytes_after_the_body_or_a_cut_body_are_refused() -> None:
    frame = contract.pack_batch_body(BatchBody(["k", 1.0], [], [], [], []))
    for bad in (frame + b"\x00", frame[:-3], b"", b"\xc1"):
        for compiled in (False, True):
            with pytest.raises((ValueError, DecodeError)):
                IntervalBucket(SeriesLimit(10, OVERFLOW), compiled=compiled).merge_frame(bad)


def test_bucket_counts_come_out_the_same_from_both_with_rates_and_values_on_a_bound() -> None:
    # On a bound counts in it (le); a sampled line weighs 1 / rate; past the last bound only +Inf holds it.
    lines = ["card:0.5|ms|@0.5", "card:1.5|ms|@0.5", "card:1.5|ms|@0.5", "card:2|ms|@0.5", "card:9|ms|@0.5",
             "lat:0|h", "lat:-3|h", "lat:1e7|d"]
    python = assert_same(bodies([payload(lines)], max_entries=2), limit=10_000)
    buckets = {(a["name"], a["type"]): a["buckets"] for a in python.aggregates(10.0, 10.0, [50.0], BOUNDS)}
    wide = [-1.0, 0.0, 1.0, 10.0, 1e6]
    assert buckets == {("card", "timer"): {"le": [0.5, 1.5, 2.5], "counts": [2.0, 6.0, 8.0, 10.0]},
                       ("lat", "histogram"): {"le": wide, "counts": [1.0, 2.0, 2.0, 2.0, 2.0, 2.0]},
                       ("lat", "distribution"): {"le": wide, "counts": [0.0] * 5 + [1.0]}}
