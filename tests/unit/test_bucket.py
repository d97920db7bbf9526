"""The compiled bucket (bucket.c) holds exactly what IntervalBucket.merge holds, and flushes the same aggregates,
and counts each series' metrics alike (what ``pystatsd top`` shows: one per value sent, of every type).

Batches come from real windows fed hand-picked and random lines, over several series limits (so
that series fold into their overflow series, and overflow keys also arrive as themselves).
"""

from __future__ import annotations

import json

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


#: A batch body frame, and its header's entry_metrics (b"": none, one metric per entry).
Frame = tuple[bytes, bytes]


#: Every timer-like counted into buckets (one of them, ``card``, into bounds of its own).
BOUNDS = BucketBounds([HistogramBuckets("card", [0.5, 1.5, 2.5]), HistogramBuckets("*", [-1.0, 0.0, 1.0, 10.0, 1e6])])


def bodies(payloads: list[bytes], max_entries: int) -> list[Frame]:
    window = PyWindow(1, (), statsd_lines({}))
    take_payloads(window, payloads, payload_parser({}), {})
    return [(body, entry_metrics) for body, *_, entry_metrics in window.take(max_entries)[0]]


def both(frames: list[Frame] | list[bytes], limit: int) -> tuple[IntervalBucket, IntervalBucket]:
    python = IntervalBucket(SeriesLimit(limit, OVERFLOW), compiled=False)
    compiled = IntervalBucket(SeriesLimit(limit, OVERFLOW))
    for frame in frames:
        body, entry_metrics = frame if isinstance(frame, tuple) else (frame, b"")
        python.merge_frame(body, entry_metrics)
        compiled.merge_frame(body, entry_metrics)
    python.close()
    compiled.close(series_metrics=True)
    return python, compiled


def sampled(bucket: IntervalBucket) -> list[tuple[int, list[tuple[str, bytes, float]]]]:
    """The timer-likes in order, their packed values joined (the Python keeps one piece per batch)."""
    return [(mtype, [(key, b"".join(packed), count) for key, (packed, count) in of_type.items()])
            for mtype, of_type in bucket.sampled.items()]


def assert_same(frames: list[Frame] | list[bytes], limit: int) -> IntervalBucket:
    python, compiled = both(frames, limit)
    for table in ("counters", "gauge_changes", "sets", "traces"):
        assert list(getattr(compiled, table).items()) == list(getattr(python, table).items()), table
    # Summed over a key's types, in whichever order each made them: the same totals.
    assert compiled.series_metrics == python.series_metrics
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


#: Lines of every type, sample rates and values > 1 among them: each is one metric (a packed line's each value).
EVERY_TYPE = ["c:5|c", "c:5|c", "c:2|c|@0.5", "c:1|c|#k:v",
              "g:7|g", "g:+2|g", "g:-1|g",
              "s:a|s", "s:a|s", "s:b|s",
              "t:1|ms|@0.1", "t:3|ms|@0.1", "h:1:2:3|h", "d:4|d|@0.5",
              json.dumps({"metric_name": "tr", "metric_type": "trace"}),
              json.dumps({"metric_name": "tr", "metric_type": "trace", "sample_rate": 0.25})]
#: What each series received: lines, not a counter's sum (14) or a set's members (2) or a timer's rated count (20).
EVERY_TYPE_METRICS = {"c": 3, series_key("c", ("k", "v")): 1, "g": 3, "s": 3, "t": 2, "h": 3, "d": 1, "tr": 2}


@pytest.mark.parametrize("max_entries", [1, 3, 100])
def test_each_series_counts_the_metrics_it_received_in_both(max_entries: int) -> None:
    # Split over payloads, so each series comes in several batches (and some in one entry each).
    frames = bodies([payload(EVERY_TYPE[:7]), payload(EVERY_TYPE[7:]), payload(EVERY_TYPE[::3])], max_entries)
    python = assert_same(frames, limit=10_000)
    # EVERY_TYPE[::3] again: c:5|c, c:1|c|#k:v, g:-1|g, s:b|s, h:1:2:3|h (three values) and a trace.
    again = {"c": 1, series_key("c", ("k", "v")): 1, "g": 1, "s": 1, "h": 3, "tr": 1}
    assert python.series_metrics == {key: count + again.get(key, 0) for key, count in EVERY_TYPE_METRICS.items()}
    assert python.counters["c"] == 3 * 5.0 + 2 / 0.5  # the sum stays the counted total


def test_a_series_of_two_types_and_a_folded_series_count_in_the_series_they_are_kept_under() -> None:
    lines = ["x:1|c", "x:2|g", "x:3|ms", "y:1|c|#u:1", "y:4|c|#u:2", "y:4|c|#u:2", "y:1|s|#u:3"]
    python = assert_same(bodies([payload(lines)], max_entries=2), limit=1)
    overflow = series_key("y", OVERFLOW)
    assert python.series_metrics == {"x": 3, series_key("y", ("u", "1")): 1, overflow: 3}


def test_batches_without_entry_metrics_count_one_per_entry() -> None:
    frames = [body for body, _ in bodies([payload(EVERY_TYPE)], max_entries=100)]
    python = assert_same(frames, limit=10_000)
    assert python.series_metrics == {key: 1 for key in EVERY_TYPE_METRICS}


def test_entry_metrics_not_one_count_per_entry_are_refused_by_both() -> None:
    ((body, entry_metrics),) = bodies([payload(["a:1|c", "b:1|g"])], max_entries=10)
    assert contract.unpack_entry_metrics(entry_metrics).tolist() == [1, 1]
    for counts in (entry_metrics[:4], entry_metrics + contract.pack_entry_metrics([1]), entry_metrics[:6]):
        for compiled in (False, True):
            with pytest.raises(ValueError, match="entry_metrics"):
                IntervalBucket(SeriesLimit(10, OVERFLOW), compiled=compiled).merge_frame(body, counts)


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
