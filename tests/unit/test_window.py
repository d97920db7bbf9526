"""The compiled window gives exactly the Python window's batches, and the Python window exactly the parsers'.

Three things are proven here, on hand-picked lines of every dialect and on random and hostile input
(hypothesis): the compiled window (window.c) and PyWindow, fed the same payloads, count the same bad
lines and write byte-identical batch bodies; PyWindow.feed gives what the routing rule
(:func:`parse_payload`) gives payload by payload; and JSON beside statsd loses no good line.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.aggregator.series import IntervalBucket, SeriesLimit
from stages.common import contract
from stages.common.model import MetricType, Sample, Tags, series_key, tag_tuple
from stages.common.sharding import shard_for
from stages.receiver import identity
from stages.receiver.identity import CACHE_SIZE, DROP, Decided, Decision, Rules
from stages.receiver.parsers import parse_payload, payload_parser, statsd_lines
from stages.receiver.rules.native import load as load_native
from stages.receiver.rules.rule_set import RuleSet
from stages.receiver.window import CompiledWindow, PyWindow, take_payloads
from tests.compiled_parts import needs_compiled_window
from tests.unit import parser_benchmarks
from tests.unit.lines import (
    BYTES,
    DEEP,
    HOSTILE,
    HOSTILE_BYTES,
    JSON_PIECES,
    LINES,
    NUMBER_ALPHABET,
    OTHER,
    STATSD_ALPHABET,
    generated_lines,
    payload,
)

pytestmark = needs_compiled_window

CORPUS = Path(__file__).resolve().parent.parent / "data" / "datagrams"
DEFAULTS = {"host": "h1", "env": "stage"}

def window_pair(shards: int = 3, defaults: dict[str, str] | None = None,
                rules: tuple[Rules, Rules] | None = None, cache_size: int = CACHE_SIZE) -> tuple[PyWindow, object]:
    """A Python and a compiled window alike; with ``rules``, the first for the Python one, the second the other."""
    defaults = DEFAULTS if defaults is None else defaults
    flat = tag_tuple({}, defaults)
    python_rules, compiled_rules = rules or (None, None)
    return (PyWindow(shards, flat, statsd_lines(defaults), python_rules, cache_size),
            CompiledWindow(shards, flat, statsd_lines(defaults), compiled_rules, cache_size))


def fed(window: object, payloads: list[bytes], defaults: dict[str, str] | None = None) -> dict[str, int]:
    bad: dict[str, int] = {}
    take_payloads(window, payloads, payload_parser(DEFAULTS if defaults is None else defaults), bad)  # type: ignore[arg-type]
    return bad


def assert_same(payloads: list[bytes], shards: int = 3, max_entries: int = 7,
                defaults: dict[str, str] | None = None, rules: tuple[Rules, Rules] | None = None,
                cache_size: int = CACHE_SIZE) -> list[list[tuple[bytes, int, int]]]:
    python, compiled = window_pair(shards, defaults, rules, cache_size)
    python_bad, compiled_bad = fed(python, payloads, defaults), fed(compiled, payloads, defaults)
    assert compiled_bad == python_bad
    assert (compiled.metrics, compiled.entries) == (python.metrics, python.entries)  # type: ignore[attr-defined]
    assert compiled.rule_dropped == python.rule_dropped  # type: ignore[attr-defined]
    assert compiled.tallies == python.tallies  # type: ignore[attr-defined]
    held = python.shard_metrics
    assert compiled.shard_metrics == held  # type: ignore[attr-defined]
    python_batches, compiled_batches = python.take(max_entries), compiled.take(max_entries)  # type: ignore[attr-defined]
    assert compiled_batches == python_batches
    # What each shard's batches stand for is what the window said it held for that shard.
    assert [sum(metrics for _, _, metrics in batches) for batches in python_batches] == held
    assert (compiled.metrics, compiled.entries, compiled.shard_metrics) == (0, 0, [0] * shards)  # type: ignore[attr-defined]
    return python_batches


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


@settings(max_examples=800, deadline=None)
@given(st.lists(generated_lines(), min_size=1, max_size=20))
def test_random_values_and_rates_give_the_same_batches(lines) -> None:
    assert_same([payload(lines)], shards=2, max_entries=4)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.text(STATSD_ALPHABET, max_size=40), min_size=1, max_size=12), st.integers(1, 3))
def test_random_statsd_like_text_gives_the_same_batches(lines, shards) -> None:
    assert_same([payload(lines)], shards)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_random_bytes_give_the_same_batches(payloads) -> None:
    assert_same(payloads)


def test_every_hostile_line_gives_the_same_batches() -> None:
    for line in HOSTILE:
        assert_same([payload([line])])
    for data in HOSTILE_BYTES:
        assert_same([data])
    assert_same([payload(HOSTILE + LINES)] + HOSTILE_BYTES)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.text(NUMBER_ALPHABET, max_size=12), st.sampled_from(["c", "g", "ms", "s"]),
                          st.sampled_from(["", "|@0.5", "|@{}", "|#k:{}"]), st.text(NUMBER_ALPHABET, max_size=8)),
                min_size=1, max_size=10))
def test_drawn_numbers_and_rates_give_the_same_batches(lines) -> None:
    assert_same([payload([f"x:{value}|{code}{field.format(other)}" for value, code, field, other in lines])])


@st.composite
def deep_documents(draw: st.DrawFn) -> str:
    """A line opening about MAX_JSON_DEPTH arrays or objects, and what may follow them."""
    openings = draw(st.lists(st.sampled_from(["[", '{"a":', "[ ", '{ "k" :\t', "\r[", "\t"]),
                             min_size=DEEP - 2, max_size=DEEP + 3))
    spoilt = draw(st.lists(JSON_PIECES, max_size=3))
    at = draw(st.integers(0, len(openings)))
    return (draw(st.sampled_from(["", " ", "\t", "\x0b", "\u00a0"])) + "".join(openings[:at]) + "".join(spoilt)
            + "".join(openings[at:]) + "".join(draw(st.lists(JSON_PIECES, max_size=6))))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(deep_documents(), st.sampled_from(LINES + HOSTILE), st.lists(JSON_PIECES).map("".join)),
                min_size=1, max_size=6), st.booleans())
def test_drawn_deep_documents_beside_statsd_lines_give_the_same_batches(lines, crlf) -> None:
    assert_same([payload(lines).replace(b"\n", b"\r\n" if crlf else b"\n")])


def test_the_compiled_window_counts_the_common_bad_lines_itself() -> None:
    # Bad input costs about what good input does only if the C decides it: no line of the hostile mix
    # may reach the Python parser (a call each, and a json.loads for a deep document), nor a payload
    # holding '{' or '[' be left to the caller. (This mix's random bytes hold no line of valid UTF-8
    # beyond ASCII, which the Python parser rightly reads: the seed is chosen so.)
    payloads = parser_benchmarks.hostile_datagrams(1000, seed=3)
    python, compiled = window_pair(shards=2, defaults={})
    bad: dict[str, int] = {}
    assert compiled.feed(payloads, 0, bad) == len(payloads)  # type: ignore[attr-defined]
    assert compiled.fallbacks == 0  # type: ignore[attr-defined]
    assert {"invalid_utf8", "non_finite", "too_deep", "too_many_tags"} <= bad.keys()
    assert bad == fed(python, payloads, defaults={})
    assert compiled.take(50) == python.take(50)  # type: ignore[attr-defined]


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
        bucket = IntervalBucket(SeriesLimit(10_000, ("pystatsd_overflow", "true")), compiled=False)
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


def test_feed_stops_at_a_payload_holding_a_json_document_and_takes_the_rest_after() -> None:
    for window in window_pair(shards=1, defaults={}):
        payloads = [b"a:1|c", b'c:1|c\n {"metric_name": "j", "metric_type": "trace"}', b"c:1|c"]
        assert window.feed(payloads, 0, {}) == 1  # type: ignore[attr-defined]
        assert window.feed(payloads, 2, {}) == 3  # type: ignore[attr-defined]
        assert window.metrics == 2  # type: ignore[attr-defined]


def test_a_sample_the_window_cannot_take_is_an_error_not_a_crash() -> None:
    _, compiled = window_pair(shards=1)
    for sample in [("x", 99, 1.0, 1.0, ()), ("x", 1, "one", 1.0, ()), ("x", 7, 1.0, 1.0, ()), ("x", 1, 1.0, 1.0, [])]:
        with pytest.raises((TypeError, ValueError)):
            compiled.add(sample)  # type: ignore[attr-defined]


def test_the_micro_benchmarks_run() -> None:
    # What they print is no test result (timings live outside the tests); that they run is.
    figures = parser_benchmarks.benchmark(series=200, datagrams=40)
    assert {"window, compiled", "window, python", "bucket merge, python"} <= set(figures)
    assert all(nanoseconds > 0 for nanoseconds in figures.values())


def test_the_rules_micro_benchmark_runs() -> None:
    # bench.rules_window (the window with and without bench/rules.yaml): that it runs, on a few lines the rules
    # rename, drop, re-tag and miss; it times each window and its caches cold as asked.
    from bench import rules_window

    tags = "|#env:bench,host:h1,zone:z1"
    datagrams = ["\n".join(f"bench.{kind}{i}:1|{code}{tags}" for kind, code in (("t", "ms"), ("c", "c"), ("g", "g"))
                           for i in range(90, 100)).encode()] * 3
    for evict in (0, 1):
        figures = rules_window.measure(datagrams, rounds=1, python=CompiledWindow is None, evict_mib=evict)
        assert list(figures) == ["without rules", "with bench/rules.yaml"]
        assert all(nanoseconds > 0 for nanoseconds in figures.values())


# ---- the seam for rules (stages.receiver.identity): both windows ask the same, and file the same ----

def without(tags: Tags, key: str) -> Tags:
    """Flat ``tags`` without ``key``."""
    return tuple(text for k, v in zip(tags[::2], tags[1::2], strict=True) if k != key for text in (k, v))


class Renaming:
    """Rules that rename (many names into few, on other shards), add and remove tags (merging series), drop
    (by name, and by type alone), and leave alone, some naming a tally; each question asked is noted."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, Tags]] = []

    def __call__(self, name: str, mtype: int, tags: Tags) -> Decision | Decided:
        decision = self.decide(name, mtype, tags)
        tally = zlib.crc32(name.encode("utf-8", "surrogatepass")) % 5
        return Decided(tally * 3, decision) if tally else decision

    def decide(self, name: str, mtype: int, tags: Tags) -> Decision:
        self.asked.append((name, mtype, tags))
        pick = zlib.crc32(name.encode("utf-8", "surrogatepass")) % 6
        if pick == 0:
            return DROP
        if pick == 1:
            return f"renamed.{len(name) % 4}", tags
        if pick == 2:  # the host tag removed, two added out of order: the seam sorts them
            return name, (*without(tags, "host"), "zz", "last", "aa", name[:3])
        if pick == 3:
            return DROP if mtype == int(MetricType.COUNTER) else None
        if pick == 4:
            return "all.tags.gone", ()
        return None


def renaming_pair() -> tuple[Renaming, Renaming]:
    return Renaming(), Renaming()


def assert_same_with_rules(payloads: list[bytes], shards: int = 3, max_entries: int = 7,
                           defaults: dict[str, str] | None = None, cache_size: int = CACHE_SIZE) -> None:
    rules = renaming_pair()
    assert_same(payloads, shards, max_entries, defaults, rules, cache_size)
    assert rules[0].asked == rules[1].asked
    if cache_size == CACHE_SIZE:  # nothing emptied: each distinct name, type and tag set asked once
        assert len(set(rules[0].asked)) == len(rules[0].asked)


def test_every_hand_picked_line_gives_the_same_batches_under_rules() -> None:
    for line in LINES + OTHER:
        assert_same_with_rules([payload([line])])
    for data in BYTES + HOSTILE_BYTES:
        assert_same_with_rules([data])
    assert_same_with_rules([payload(LINES + OTHER + HOSTILE)] + BYTES, shards=1, max_entries=1000)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(LINES + OTHER), min_size=1, max_size=10), st.booleans()),
                min_size=1, max_size=8),
       st.integers(1, 4), st.integers(1, 20), st.sampled_from([{}, DEFAULTS, {"env": "prod", "zone": "a b"}]),
       st.sampled_from([1, 2, 5, CACHE_SIZE]))
def test_random_bursts_give_the_same_batches_under_rules(datagrams, shards, max_entries, defaults, cache_size) -> None:
    assert_same_with_rules([payload(lines, newline_after) for lines, newline_after in datagrams], shards, max_entries,
                           defaults, cache_size)


@settings(max_examples=300, deadline=None)
@given(st.lists(generated_lines(), min_size=1, max_size=20), st.sampled_from([1, 3, CACHE_SIZE]))
def test_random_values_give_the_same_batches_under_rules(lines, cache_size) -> None:
    assert_same_with_rules([payload(lines)], shards=2, max_entries=4, cache_size=cache_size)


def counters_of(window: object) -> dict[str, tuple[int, float]]:
    """Per series key, (its shard, its counter sum), from a take of everything."""
    out = {}
    for shard, batches in enumerate(window.take(1000)):  # type: ignore[attr-defined]
        for body, _, _ in batches:
            counters = contract.decode_batch_body(body).counters
            out.update({key: (shard, value) for key, value in zip(counters[::2], counters[1::2], strict=True)})
    return out


def test_a_renamed_series_lands_on_its_new_name_s_shard_and_removed_tags_merge_series() -> None:
    def rules(name: str, mtype: int, tags: Tags) -> Decision:
        if name.startswith("api."):  # api.<host>.<method>.requests: the parts into tags
            _, host, method, _ = name.split(".")
            return "api.requests", (*tags, "host", host, "method", method)
        if name == "web.hits":
            return name, without(tags, "pod")
        return DROP if name.startswith("debug.") else None

    lines = (["api.h1.GET.requests:1|c", "api.h2.GET.requests:2|c", "api.h1.GET.requests:3|c|@0.5",
              "web.hits:1|c|#pod:a", "web.hits:2|c|#pod:b", "web.hits:4|c|#pod:c,zone:z", "kept:1|c"]
             + ["debug.x:1|c", "debug.y:1:2:3|c"] * 5)
    for window in window_pair(shards=4, defaults={"env": "prod"}, rules=(rules, rules)):
        assert fed(window, [payload(lines)], defaults={"env": "prod"}) == {}
        # every sample counted: in the window, or as dropped by a rule
        assert (window.metrics, window.rule_dropped) == (7, 20)  # type: ignore[attr-defined]
        shard = functools.partial(shard_for, shard_count=4)
        assert counters_of(window) == {
            series_key("api.requests", ("env", "prod", "host", "h1", "method", "GET")): (shard("api.requests"), 7.0),
            series_key("api.requests", ("env", "prod", "host", "h2", "method", "GET")): (shard("api.requests"), 2.0),
            series_key("web.hits", ("env", "prod")): (shard("web.hits"), 3.0),
            series_key("web.hits", ("env", "prod", "zone", "z")): (shard("web.hits"), 4.0),
            series_key("kept", ("env", "prod")): (shard("kept"), 1.0),
        }
        assert {shard("api.requests"), shard("web.hits")} != {shard("api.h1.GET.requests")}  # the lines moved


def test_rules_are_asked_once_per_distinct_name_type_and_tag_set_across_takes_misses_included() -> None:
    lines = ["a:1|c", "a:1|c|#k:v", "a:1|ms", "a:+1|g", "a:1|g", "b:1|c", "drop.me:1|c", "x.y:1|c"] * 50
    document = json.dumps([{"metric_name": "j", "metric_type": "counter", "value": 1}] * 3).encode()
    for window, rules in zip(window_pair(shards=2, defaults={}, rules=(python := renaming_pair())), python,
                             strict=True):
        for _ in range(3):
            fed(window, [payload(lines), document], defaults={})
            window.take(5)  # type: ignore[attr-defined]
        assert sorted(rules.asked) == [("a", 1, ()), ("a", 1, ("k", "v")), ("a", 2, ()), ("a", 4, ()), ("b", 1, ()),
                                       ("drop.me", 1, ()), ("j", 1, ()), ("x.y", 1, ())]


def test_take_after_take_under_rules_both_windows_file_each_series_anew() -> None:
    # The compiled window remembers, per answer, the entry its series went to until the entries are
    # taken: after a take (and after the answers were emptied for room) a series seen again, merged
    # with others or not, must get an entry of the new window, as the Python one gives.
    lines = [f"svc{i % 7}.hits:{i}|c|#host:h{i % 3}" for i in range(40)] + ["a:1|ms", "a:2|ms", "drop.me:1|c"]
    for cache_size in (CACHE_SIZE, 3):
        python, compiled = window_pair(shards=2, defaults={}, rules=renaming_pair(), cache_size=cache_size)
        for round_ in range(4):
            burst = [payload(lines[round_:] + lines[:round_])]
            assert fed(compiled, burst, defaults={}) == fed(python, burst, defaults={})
            assert compiled.entries == python.entries  # type: ignore[attr-defined]
            assert compiled.take(5) == python.take(5)  # type: ignore[attr-defined]
        assert compiled.tallies == python.tallies  # type: ignore[attr-defined]
        assert compiled.rule_dropped == python.rule_dropped  # type: ignore[attr-defined]


def test_thousands_of_answers_short_and_long_keys_and_a_cache_emptied_on_the_way_match() -> None:
    # The compiled window's answers grow (1,024 records at first, two per answer) and hold a series key of up to
    # 56 bytes in the record itself, a longer one beside: thousands of series, half with keys far longer, both
    # windows alike, with a cache that holds them all and one emptied several times on the way.
    lines = [f"svc{i}.{'long_component_' * (i % 2 * 4)}hits:1|c|#host:h{i % 5},dc:{'x' * (i % 3 * 30)}"
             for i in range(3000)]
    for cache_size in (CACHE_SIZE, 700):
        python, compiled = window_pair(shards=2, defaults={}, rules=(rules := renaming_pair()), cache_size=cache_size)
        burst = [payload(lines[start:start + 100]) for start in range(0, len(lines), 100)]
        for _ in range(2):
            assert fed(compiled, burst, defaults={}) == fed(python, burst, defaults={})
            assert compiled.take(50) == python.take(50)  # type: ignore[attr-defined]
        assert compiled.tallies == python.tallies  # type: ignore[attr-defined]
        assert rules[0].asked == rules[1].asked
        assert len(rules[0].asked) == (3000 if cache_size == CACHE_SIZE else 6000)


def test_the_cache_is_bounded_and_emptied_when_full() -> None:
    for window, rules in zip(window_pair(shards=1, defaults={}, rules=(python := renaming_pair()), cache_size=2),
                             python, strict=True):
        fed(window, [b"a:1|c\nb:1|c\na:1|c\nb:1|c"], defaults={})
        assert len(rules.asked) == 2
        fed(window, [b"c:1|c"], defaults={})  # no room: emptied, then c alone
        fed(window, [b"c:1|c\na:1|c\nc:1|c\na:1|c"], defaults={})
        assert [name for name, _, _ in rules.asked] == ["a", "b", "c", "a"]
        fed(window, [b"b:1|c\nc:1|c"], defaults={})  # {c, a} is full: b empties it; c then asked again
        assert [name for name, _, _ in rules.asked] == ["a", "b", "c", "a", "b", "c"]


def test_without_rules_nothing_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def asked(*args: object) -> None:
        raise AssertionError("asked without rules")

    monkeypatch.setattr(identity, "answer", asked)
    monkeypatch.setattr(identity.Answers, "of", asked)
    assert_same([payload(LINES + OTHER)] + BYTES)
    for window in window_pair(rules=None):
        fed(window, [payload(LINES)])
        assert window.rule_dropped == 0  # type: ignore[attr-defined]


def test_a_rule_that_fails_or_answers_wrong_is_an_error_asked_again_not_a_crash() -> None:
    calls = []

    def failing(name: str, mtype: int, tags: Tags) -> Decision:
        calls.append(name)
        raise RuntimeError("rule broke")

    for wrong in [("", ()), ("a\x1fb", ()), ("a", ("k",)), ("a", ["k", "v"]), ("a", ("k", 1))]:
        for window in window_pair(rules=(lambda *_, wrong=wrong: wrong,) * 2):  # type: ignore[misc]
            with pytest.raises(ValueError, match="rules: "):
                fed(window, [b"x:1|c"])
    for window in window_pair(shards=1, rules=(failing, failing)):
        for _ in range(2):
            with pytest.raises(RuntimeError, match="rule broke"):
                fed(window, [b"x:1|c"])
        assert window.metrics == 0  # type: ignore[attr-defined]
    assert calls == ["x"] * 4


def test_the_compiled_window_keeps_no_reference_it_should_not() -> None:
    decision = ("renamed", ("k", "v"))

    def rules(name: str, mtype: int, tags: Tags) -> Decision:
        return decision if name != "gone" else DROP

    compiled = CompiledWindow(1, (), statsd_lines({}), rules, 1)  # type: ignore[misc]
    before = sys.getrefcount(decision), sys.getrefcount(rules), sys.getrefcount(DROP)
    for _ in range(3):  # every line a miss: the cache holds one series
        fed(compiled, [payload([f"n{i}:1|c|#t:{i}" for i in range(500)] + ["gone:1|c", "n1:u|s"])], defaults={})
        compiled.take(100)  # type: ignore[attr-defined]
        fed(compiled, [json.dumps({"metric_name": "gone", "metric_type": "counter"}).encode()], defaults={})
    assert (sys.getrefcount(decision), sys.getrefcount(rules), sys.getrefcount(DROP)) == before
    assert compiled.rule_dropped == 6  # type: ignore[attr-defined]
    del compiled
    assert sys.getrefcount(rules) == before[1] - 1


def test_each_sample_is_counted_under_the_tally_of_the_rule_that_decided_and_own_samples_pass_the_rules() -> None:
    native = load_native([{"match": "debug.*", "drop": True},
                          {"match": "api.*.*", "name": "api", "tags": {"host": "$1", "method": "$2"}},
                          {"match": "pystatsd.*.*", "drop": True}], "rules", Path("."))
    rule_set = RuleSet([native])
    assert [tuple(tally) for tally in rule_set.tally_names()] == [
        ("unmatched", None), ("mapped", "rules[0]"), ("dropped", "rules[0]"), ("mapped", "rules[1]"),
        ("dropped", "rules[1]"), ("mapped", "rules[2]"), ("dropped", "rules[2]")]
    lines = ["debug.a:1|c", "debug.b:1:2:3|ms", "api.h1.GET:1|c", "api.h2.GET:1|c|@0.5", "api.h1.GET:1:2|ms",
             "kept:1|c", "kept:1|c|#k:v", "bad line"] * 3
    document = json.dumps([{"metric_name": "api.h3.PUT", "metric_type": "counter", "value": 1}]).encode()
    own: Sample = ("pystatsd.receiver.metrics", int(MetricType.COUNTER), 1.0, 1.0, ())
    for window in window_pair(shards=2, defaults={}, rules=(rule_set, rule_set)):
        assert fed(window, [payload(lines), document], defaults={}) == {"no_value": 3}
        window.add_own(own)  # type: ignore[attr-defined]
        # unmatched 6 (kept twice, thrice), rules[0] dropped 12, rules[1] mapped 12 + the document's 1;
        # the receiver's own sample is in no tally (rules[2] would have dropped it)
        assert window.tallies == [6, 0, 12, 13]  # type: ignore[attr-defined]
        assert (window.metrics, window.rule_dropped) == (6 + 13 + 1, 12)  # type: ignore[attr-defined]
        window.take(100)  # type: ignore[attr-defined]
        fed(window, [b"kept:1|c"], defaults={})
        assert window.tallies == [7, 0, 12, 13]  # type: ignore[attr-defined]  # since the window was made


@pytest.mark.parametrize("compiled_bucket", [False, True])
def test_a_rule_that_renames_a_flood_of_names_into_one_is_still_bounded_by_the_series_limit(
        compiled_bucket: bool) -> None:
    rule_set = RuleSet([load_native([{"match": "user.*.hits", "name": "user.hits", "tags": {"user": "$1"}}], "rules",
                                    Path("."))])
    lines = [f"user.u{n}.hits:{n}|c" for n in range(50)]
    for window in window_pair(shards=1, defaults={}, rules=(rule_set, rule_set)):
        fed(window, [payload(lines)], defaults={})
        limit = SeriesLimit(10, ("pystatsd_overflow", "true"))
        bucket = IntervalBucket(limit, compiled=compiled_bucket)
        for body, _, _ in window.take(7)[0]:  # type: ignore[attr-defined]
            bucket.merge_frame(body)
        bucket.close()
        values = {tuple(sorted(aggregate["tags"].items())): aggregate["value"]
                  for aggregate in bucket.aggregates(10.0, 10.0, [50.0])}
        assert {aggregate["name"] for aggregate in bucket.aggregates(10.0, 10.0, [50.0])} == {"user.hits"}
        # ten series of the new name, the forty others folded into its overflow series; the total exact
        assert len(values) == 11 and limit.folded == {"user.hits": 40}
        assert values[(("pystatsd_overflow", "true"),)] == sum(range(50)) - sum(
            value for tags, value in values.items() if tags != (("pystatsd_overflow", "true"),))
        assert sum(values.values()) == sum(range(50))
