"""The compiled window gives exactly the Python window's batches, and the Python window exactly the parsers'.

Three things are proven here, on hand-picked lines of every dialect and on random and hostile input
(hypothesis): the compiled window (window.c) and PyWindow, fed the same payloads, count the same bad
lines and write byte-identical batch bodies; PyWindow.feed gives what the routing rule
(:func:`parse_payload`) gives payload by payload; and JSON beside statsd loses no good line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages import contract
from stages.aggregator.series import IntervalBucket, SeriesLimit
from stages.model import MetricType, Sample, series_key, tag_tuple
from stages.receiver.parsers import parse_payload, payload_parser, statsd_lines
from stages.receiver.window import CompiledWindow, PyWindow, take_payloads

pytestmark = pytest.mark.skipif(CompiledWindow is None, reason="the compiled window was not built")

CORPUS = Path(__file__).resolve().parent.parent / "data" / "datagrams"
DEFAULTS = {"host": "h1", "env": "stage"}

#: Lines of every dialect the parser reads, and of most ways to get one wrong.
LINES = [
    # Etsy, DogStatsD, InfluxDB-style, packed values, rates, every type
    "hits:1|c", "hits:1|c|#env:prod", "hits:2|c|@0.5", "hits:1|c|#env:prod,region:eu", "hits:3|c|@0.1|#a:1",
    "hits,region=eu,az=b:1|c", "hits,env=x:1|c|#env:prod", "lat:3.5|ms", "lat:37.80|ms|#route:/api",
    "lat:1:2:3|ms|@0.25", "temp:20|g", "temp:+2|g", "temp:-1|g", "temp:-0|g", "temp:1:+2:-3|g", "users:u1|s",
    "users:a:b|s", "users:u2|s|#x:y", "multi:1:2:3|d", "h:0.5|h", "x:1e3|c", "x:.5|c", "x:5.|c", "x:-0.0e+1|ms",
    "x:123456789012345678|ms", "x:0.1234567890123456789|ms", "x:1e308|g", "x:2.2250738585072014e-308|ms",
    "a b  c/d:1|c", "  spaced :1|c", "x:1|c|#k", "x:1|c|#k:", "x:1|c|#k:v:w", "x:1|c|#,,k:v,", "x:1|c||",
    "x:1|c|c:container|T1700000000", "x:1|c|@0.5|@1", "x:1|c|#a:1|#b:2", "x:1|c|#a:1|#a:2", "x|y:1|c",
    "hits:1|c\r", "hits:1|c\r\r", "q:1|c|#host:mine", "k,host=x:1|c",
    # wrong in every way the parser counts
    "bad line", "x:1|zz", "x:1", "x:|c", ":1|c", " :1|c", "x:1|c|@0", "x:1|c|@2", "x:1|c|@-1", "x:1|c|@",
    "x:1|c|@1e-320", "x:1e300|c|@1e-10", "x:nan|c", "x:inf|g", "x:1e400|ms", "x:1_000|c", "x: 12|c", "x:12 |c",
    "x:0x10|c", "x:1:two|ms", "x:|s", "x:1|c|#:v", "x,=v:1|c", "x,k:1|c", "x,:1|c", "_e{1,1}:a|b", "_sc|x|0",
    "x:1|c|#" + ",".join(f"t{i}:v" for i in range(70)), "x:1|c|#k:" + "v" * 1100, "n" * 1100 + ":1|c",
    "x:" + "1" * 70 + "|c", "hits:\x01|c", "hi\x7fts:1|c", "hits:1|c\x00", "\t", " ", "",
    # non-ASCII, good and bad
    "caf\u00e9:1|c", "x:1|c|#city:K\u00f6ln", "\u00a0x:1|c", "x\u2003y:1|c", "x:\uff11|c", "x:1|c|#k:\u00a0",
]
#: Lines that may start or be JSON, or bytes no text has.
OTHER = [
    '{"metric_name": "j", "metric_type": "counter", "value": 1}', '{"metric_name": "g", "metric_type": "gauge", '
    '"value": 5, "sample_rate": 1}', '[{"metric_name": "t", "metric_type": "timer", "value": 2.5}]', "[1]",
    "{", "[x:1|c", "{x:1|c", "  {x:1|c", "\t[1]", "x:1|c|#k:[v]", '{"metric_name": "a\\ud800", "metric_type": "trace"}',
]
BYTES = [b"\xff\xfe", b"x:1|c|#k:\xc3", b"caf\xc3\xa9:2|c", b"\xed\xa0\x80:1|c"]


def window_pair(shards: int = 3, defaults: dict[str, str] | None = None) -> tuple[PyWindow, object]:
    defaults = DEFAULTS if defaults is None else defaults
    flat = tag_tuple({}, defaults)
    return PyWindow(shards, flat, statsd_lines(defaults)), CompiledWindow(shards, flat, statsd_lines(defaults))


def fed(window: object, payloads: list[bytes], defaults: dict[str, str] | None = None) -> dict[str, int]:
    bad: dict[str, int] = {}
    take_payloads(window, payloads, payload_parser(DEFAULTS if defaults is None else defaults), bad)  # type: ignore[arg-type]
    return bad


def assert_same(payloads: list[bytes], shards: int = 3, max_entries: int = 7,
                defaults: dict[str, str] | None = None) -> list[list[tuple[bytes, int, int]]]:
    python, compiled = window_pair(shards, defaults)
    python_bad, compiled_bad = fed(python, payloads, defaults), fed(compiled, payloads, defaults)
    assert compiled_bad == python_bad
    assert (compiled.metrics, compiled.entries) == (python.metrics, python.entries)  # type: ignore[attr-defined]
    python_batches, compiled_batches = python.take(max_entries), compiled.take(max_entries)  # type: ignore[attr-defined]
    assert compiled_batches == python_batches
    assert (compiled.metrics, compiled.entries) == (0, 0)  # type: ignore[attr-defined]
    return python_batches


def payload(lines: list[str], newline_after: bool = False) -> bytes:
    return ("\n".join(lines) + ("\n" if newline_after else "")).encode("utf-8", "surrogatepass")


def test_every_hand_picked_line_alone_gives_the_same_batches() -> None:
    for line in LINES + OTHER:
        assert_same([payload([line])])
    for data in BYTES:
        assert_same([data])


def test_all_lines_in_one_payload_and_in_a_burst_give_the_same_batches() -> None:
    assert_same([payload(LINES)])
    assert_same([payload([line], newline_after=True) for line in LINES + OTHER] + BYTES)
    batches = assert_same([payload(LINES + OTHER)] + BYTES, shards=1, max_entries=1000)
    assert len(batches[0]) == 1


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(LINES + OTHER), min_size=1, max_size=10), st.booleans()),
                min_size=1, max_size=8),
       st.integers(1, 4), st.integers(1, 20), st.sampled_from([{}, DEFAULTS, {"env": "prod", "zone": "a b"}]))
def test_random_bursts_of_known_lines_give_the_same_batches(datagrams, shards, max_entries, defaults) -> None:
    assert_same([payload(lines, newline_after) for lines, newline_after in datagrams], shards, max_entries, defaults)


NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),  # up to 17 significant digits
    st.integers(0, 25).flatmap(lambda places: st.decimals(allow_nan=False, allow_infinity=False, places=places)).map(
        str),
    st.integers(-10**20, 10**20).map(str),
    st.tuples(st.integers(0, 10**16), st.integers(0, 30), st.sampled_from(["", "-", "+"])).map(
        lambda t: f"{t[2]}{str(t[0])[:-t[1] or None]}.{str(t[0])[-t[1]:] if t[1] else ''}"),
    st.from_regex(r"[+-]?[0-9]{0,19}(\.[0-9]{0,24})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
)
RATE_TEXT = st.one_of(st.sampled_from(["1", "0.5", "0.1", "0.3333333333333333", "1e-300", "0"]),
                      st.floats(min_value=0.0, max_value=1.0).map(repr))


@st.composite
def generated_lines(draw: st.DrawFn) -> str:
    """A statsd line of any type, with values and rates drawn afresh (mostly well formed)."""
    code = draw(st.sampled_from(["c", "g", "ms", "h", "d", "s"]))
    values = draw(st.lists(NUMBER_TEXT, min_size=1, max_size=3))
    if code == "g" and draw(st.booleans()):
        values = [value if value[:1] in "+-" else "+" + value for value in values]
    line = f"m{draw(st.integers(0, 3))}:{':'.join(values)}|{code}"
    if draw(st.booleans()):
        line += f"|@{draw(RATE_TEXT)}"
    if draw(st.booleans()):
        line += "|#" + ",".join(draw(st.lists(st.sampled_from(["a:1", "b:2", "a:3", "host:x", "c"]), max_size=4)))
    return line


@settings(max_examples=800, deadline=None)
@given(st.lists(generated_lines(), min_size=1, max_size=20))
def test_random_values_and_rates_give_the_same_batches(lines) -> None:
    assert_same([payload(lines)], shards=2, max_entries=4)


#: Characters that make statsd lines, and a few that break them.
STATSD_ALPHABET = st.sampled_from(list("abcxyz.-_:|@#,=+-0123456789eE. /\t\r{[") + ["\u00e9", "\x01", "\u2003"])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.text(STATSD_ALPHABET, max_size=40), min_size=1, max_size=12), st.integers(1, 3))
def test_random_statsd_like_text_gives_the_same_batches(lines, shards) -> None:
    assert_same([payload(lines)], shards)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_random_bytes_give_the_same_batches(payloads) -> None:
    assert_same(payloads)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(LINES + OTHER), min_size=1, max_size=10), min_size=1, max_size=6))
def test_the_python_window_gives_what_the_routing_rule_gives_payload_by_payload(datagrams) -> None:
    payloads = [payload(lines) for lines in datagrams]
    window, _ = window_pair()
    bad = fed(window, payloads)
    expected_window, _ = window_pair()
    expected_bad: dict[str, int] = {}
    for data in payloads:
        samples: list[Sample] = []
        parse_payload(data, DEFAULTS, samples, expected_bad)
        for sample in samples:
            expected_window.add(sample)
    assert bad == expected_bad
    assert window.take(5) == expected_window.take(5)


@pytest.mark.parametrize("order", ["json first", "statsd first"])
def test_a_good_line_beside_a_json_document_is_kept_either_way(order: str) -> None:
    document = json.dumps({"metric_name": "a", "metric_type": "counter"})
    lines = [document, "canary:1|c"] if order == "json first" else ["canary:1|c", document]
    for window in window_pair(shards=1):
        bad = fed(window, [payload(lines)], defaults={})
        assert bad == {}
        (batch,) = window.take(100)[0]  # type: ignore[attr-defined]
        counters = contract.decode_batch_body(batch[0]).counters
        assert dict(zip(counters[::2], counters[1::2], strict=True)) == {"a": 1.0, "canary": 1.0}


def test_a_pretty_printed_document_is_one_document() -> None:
    document = json.dumps([{"metric_name": "a", "metric_type": "counter", "value": 2},
                           {"metric_name": "b", "metric_type": "gauge", "value": 3}], indent=2)
    for window in window_pair(shards=1):
        assert fed(window, [document.encode()], defaults={}) == {}
        (batch,) = window.take(100)[0]  # type: ignore[attr-defined]
        body = contract.decode_batch_body(batch[0])
        assert (body.counters, body.gauges) == (["a", 2.0], ["b", True, 3.0])


def test_default_tags_are_merged_and_a_line_s_own_tag_wins() -> None:
    for window in window_pair(shards=1, defaults=DEFAULTS):
        fed(window, [b"hits:1|c|#env:prod,a:1\nhits,env=prod:1|c|#a:1"])
        (batch,) = window.take(100)[0]  # type: ignore[attr-defined]
        assert contract.decode_batch_body(batch[0]).counters == [
            series_key("hits", ("a", "1", "env", "prod", "host", "h1")), 2.0]


def corpus_payloads() -> list[bytes]:
    return [path.read_bytes() for kind in ("valid", "invalid") for path in sorted((CORPUS / kind).iterdir())
            if path.suffix in (".txt", ".bin")]


def test_the_parser_corpus_gives_the_same_batches() -> None:
    payloads = corpus_payloads()
    assert len(payloads) >= 60
    for data in payloads:
        assert_same([data], defaults={})
    assert_same(payloads, defaults={})


def test_the_same_batches_make_the_same_aggregates_with_no_non_finite_value() -> None:
    payloads = [payload(LINES + OTHER)] * 3 + BYTES
    python, compiled = window_pair(shards=1)
    aggregates = []
    for window in (python, compiled):
        fed(window, payloads)
        bucket = IntervalBucket(SeriesLimit(10_000, ("pystatsd_overflow", "true")))
        for body, _, _ in window.take(3)[0]:  # type: ignore[attr-defined]
            bucket.merge(contract.decode_batch_body(body))
        aggregates.append(bucket.aggregates(10.0, 10.0, [50.0, 99.0]))
    assert aggregates[0] == aggregates[1] and len(aggregates[0]) > 30
    for aggregate in aggregates[0]:
        numbers = list(aggregate["stats"].values()) if "stats" in aggregate else [aggregate["value"]]
        assert all(math.isfinite(number) for number in numbers), aggregate


def test_counters_and_timers_are_accumulated_exactly() -> None:
    lines = ["c:1|c"] * 500 + ["c:2|c|@0.5"] * 10 + ["t:1.5|ms|@0.25", "t:2|ms"] * 50 + ["s:a|s", "s:b|s", "s:a|s"]
    for window in window_pair(shards=1, defaults={}):
        assert window.feed([payload(lines)], 0, {}) == 1  # type: ignore[attr-defined]
        assert window.metrics == len(lines)  # type: ignore[attr-defined]
        ((body, entries, metrics),) = window.take(10)[0]  # type: ignore[attr-defined]
        decoded = contract.decode_batch_body(body)
        assert (entries, metrics) == (3, len(lines))
        assert decoded.counters == ["c", 540.0]
        assert decoded.sampled[:3] == ["t", int(MetricType.TIMER), 250.0]
        assert list(contract.unpack_values(decoded.sampled[3])) == [1.5, 2.0] * 50
        assert decoded.sets == ["s", ["a", "b"]]


def test_feed_stops_at_a_payload_that_may_hold_json_and_takes_the_rest_after() -> None:
    for window in window_pair(shards=1, defaults={}):
        payloads = [b"a:1|c", b"b:1|c|#k:[x]", b"c:1|c"]
        assert window.feed(payloads, 0, {}) == 1  # type: ignore[attr-defined]
        assert window.feed(payloads, 2, {}) == 3  # type: ignore[attr-defined]
        assert window.metrics == 2  # type: ignore[attr-defined]


def test_a_sample_the_window_cannot_take_is_an_error_not_a_crash() -> None:
    _, compiled = window_pair(shards=1)
    for sample in [("x", 99, 1.0, 1.0, ()), ("x", 1, "one", 1.0, ()), ("x", 7, 1.0, 1.0, ()), ("x", 1, 1.0, 1.0, [])]:
        with pytest.raises((TypeError, ValueError)):
            compiled.add(sample)  # type: ignore[attr-defined]
