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
from stages.receiver.parsers.base import PLAIN, LineOptions, OpenInterval
from stages.receiver.rules.native import load as load_native
from stages.receiver.rules.rule_set import RuleSet
from stages.receiver.rules.statsd_exporter import from_yaml
from stages.receiver.window import Batch, CompiledWindow, PyWindow, take_payloads
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
                rules: tuple[Rules, Rules] | None = None, cache_size: int = CACHE_SIZE,
                options: LineOptions = PLAIN) -> tuple[PyWindow, object]:
    """A Python and a compiled window alike; with ``rules``, the first for the Python one, the second the other."""
    defaults = DEFAULTS if defaults is None else defaults
    flat = tag_tuple({}, defaults)
    python_rules, compiled_rules = rules or (None, None)
    return (PyWindow(shards, flat, statsd_lines(defaults, options), python_rules, cache_size),
            CompiledWindow(shards, flat, statsd_lines(defaults, options), compiled_rules, cache_size,
                           options.keep_container_id))


def fed(window: object, payloads: list[bytes], defaults: dict[str, str] | None = None,
        options: LineOptions = PLAIN) -> dict[str, int]:
    bad: dict[str, int] = {}
    parse = payload_parser(DEFAULTS if defaults is None else defaults, options)
    take_payloads(window, payloads, parse, bad)  # type: ignore[arg-type]
    return bad


def assert_same(payloads: list[bytes], shards: int = 3, max_entries: int = 7,
                defaults: dict[str, str] | None = None, rules: tuple[Rules, Rules] | None = None,
                cache_size: int = CACHE_SIZE, options: LineOptions = PLAIN) -> list[list[Batch]]:
    python, compiled = window_pair(shards, defaults, rules, cache_size, options)
    python_bad, compiled_bad = fed(python, payloads, defaults, options), fed(compiled, payloads, defaults, options)
    assert compiled_bad == python_bad
    assert (compiled.metrics, compiled.entries) == (python.metrics, python.entries)  # type: ignore[attr-defined]
    assert compiled.rule_dropped == python.rule_dropped  # type: ignore[attr-defined]
    assert compiled.tallies == python.tallies  # type: ignore[attr-defined]
    held = python.shard_metrics
    assert compiled.shard_metrics == held  # type: ignore[attr-defined]
    python_batches, compiled_batches = python.take(max_entries), compiled.take(max_entries)  # type: ignore[attr-defined]
    assert compiled_batches == python_batches
    # What each shard's batches stand for is what the window said it held for that shard.
    assert [sum(metrics for _, _, metrics, *_ in batches) for batches in python_batches] == held
    # Each entry's metrics, one count per entry, add up to the batch's.
    for _, entries, metrics, _, entry_metrics in (batch for batches in python_batches for batch in batches):
        counts = contract.unpack_entry_metrics(entry_metrics)
        assert (len(counts), sum(counts)) == (entries, metrics)
        assert min(counts) >= 1
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
        for body, *_ in window.take(3)[0]:  # type: ignore[attr-defined]
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
        ((body, entries, metrics, _, entry_metrics),) = window.take(10)[0]  # type: ignore[attr-defined]
        decoded = contract.decode_batch_body(body)
        assert (entries, metrics) == (3, len(lines))
        # In body order, unweighted: c's 510 lines (its sum says 540), t's 100 samples, s's 3 lines (2 members).
        assert list(contract.unpack_entry_metrics(entry_metrics)) == [510, 100, 3]
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


#: The scales Renaming gives, picked by name apart from what it decides: none, down, up, and negative.
SCALES = (None, 0.001, 1000.0, -2.5)
#: The ttls it gives (seconds), picked by name apart from both: none, short, long.
TTLS = (None, 0.25, 300.0)


class Renaming:
    """Rules that rename (many names into few, on other shards), add and remove tags (merging series), drop
    (by name, and by type alone), and leave alone, some naming a tally, some a scale, some a ttl (of renamed,
    merged and unchanged series alike); each question asked is noted."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, Tags]] = []

    def __call__(self, name: str, mtype: int, tags: Tags) -> Decision | Decided:
        decision = self.decide(name, mtype, tags)
        tally = zlib.crc32(name.encode("utf-8", "surrogatepass")) % 5
        scale = SCALES[zlib.adler32(name.encode("utf-8", "surrogatepass")) % len(SCALES)]
        ttl = TTLS[len(name) % len(TTLS)]
        return Decided(tally * 3, decision, scale, ttl) if tally or scale is not None or ttl else decision

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
        for body, *_ in batches:
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


def test_a_line_read_ahead_is_filed_before_the_lines_the_c_does_not_take_and_at_the_end_of_its_payload() -> None:
    # With rules the compiled window files each line after reading the next one (its answer record comes
    # meanwhile): a line it hands to the Python parser, a bad line and the end of a payload must not reorder
    # what is filed, so the entries stand in the order their first samples came, as in PyWindow, and a
    # value a scale refuses is counted with its own line.
    def rules(name: str, mtype: int, tags: Tags) -> Decision | Decided:
        if name.startswith("r."):
            return "shared", tags
        if name == "big":
            return Decided(0, None, 1e299)  # 1 and 2 scaled stay in range, 20 does not
        return None

    lines = ["r.a:1|c", "na\u00efve:1|c", "r.b:2|c", "no value here", "other:1|c", "r.c:3|c", "big:1:2:20|ms",
             "last:1|c"]
    payloads = [payload(lines), payload(lines[::-1]), b"r.z:5|c", payload(["na\u00efve:2|c", "r.y:1|c"])]
    batches = assert_same(payloads, shards=1, max_entries=100, defaults={}, rules=(rules, rules))
    body = contract.decode_batch_body(batches[0][0][0])
    assert body.counters[::2] == [series_key(name, ()) for name in ("shared", "na\u00efve", "other", "last")]
    assert body.counters[1::2] == [18.0, 4.0, 2.0, 2.0]
    assert body.sampled[2::4] == [4.0]  # big: 1 and 2 twice, each 20 refused


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

    for wrong in [("", ()), ("a\x1fb", ()), ("a", ("k",)), ("a", ["k", "v"]), ("a", ("k", 1)),
                  Decided(0, None, math.nan), Decided(0, None, math.inf), Decided(0, None, "2"),  # type: ignore[arg-type]
                  Decided(0, None, True), Decided(0, None, None, 0.0), Decided(0, None, None, -5.0),
                  Decided(0, None, None, math.inf), Decided(0, None, None, math.nan),
                  Decided(0, None, None, True), Decided(0, None, None, "30")]:  # type: ignore[arg-type]
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
        for body, *_ in window.take(7)[0]:  # type: ignore[attr-defined]
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


#: A receiver's open interval, 10 s long, filling [1700000000, 1700000010).
OPEN_AT = 1700000005.0
STAMPED = [
    "st:1|g|T1700000000", "st:2|g|T1700000009", "st:3|c|T1699999999", "st:4|c|T1700000010", "st:5|c|T1",
    "st:6|ms|T1700000003|#a:b", "st:7|c|T1700000003|T1800000000", "st:1:2|d|T1700000004|@0.5",
    "st:8|c|T", "st:9|c|T17e8", "st:10|c|T-1700000000", "st:11|c|T+1700000000", "st:12|c|T 1700000000",
    "st:13|c|T" + "1" * 19, "st:x|c|T1699999999", "st:14|c|@2|T1699999999", "st:15|c|T1699999999|@2",
    "st:16|c|T1700000005|#" + ",".join(f"t{i}:v" for i in range(70)), "st:17|c|Tx|#k:" + "v" * 1100,
    "st:18|s|T1700000001", "st:19|g|T\u0661700000000", "st:20|g|T1700000001|c:abc",
    "ci:1|c|c:abc", "ci:2|c|c:", "ci:3|c|c:abc|#container_id:mine", "ci:4|c|#container_id:mine|c:abc",
    "ci,container_id=influx:5|c|c:abc", "ci:6|c|card:high|c:d|e:it-1", "ci:7|c|c:" + "c" * 1100,
    "ci:8|c|#" + ",".join(f"t{i}:v" for i in range(64)) + "|c:full",
    '{"metric_name": "js", "metric_type": "gauge", "value": 1, "timestamp": 1700000001}',
    '{"metric_name": "js", "metric_type": "gauge", "value": 2, "timestamp": 1700000001.5}',
    '{"metric_name": "js", "metric_type": "gauge", "value": 3, "timestamp": 1699999999}',
    '{"metric_name": "js", "metric_type": "gauge", "value": 4, "timestamp": 1700000010}',
    '{"metric_name": "js", "metric_type": "gauge", "value": 5, "timestamp": "1700000001"}',
    '{"metric_name": "js", "metric_type": "gauge", "value": 6, "timestamp": true}',
    '{"metric_name": "js", "metric_type": "gauge", "value": 7, "timestamp": -1}',
    '{"metric_name": "js", "metric_type": "gauge", "timestamp": 1699999999}',
]


def stamped_options(keep_container_id: bool) -> LineOptions:
    return LineOptions(OpenInterval(10.0, OPEN_AT), keep_container_id)


@pytest.mark.parametrize("keep_container_id", [False, True])
def test_stamped_lines_and_container_ids_give_the_same_batches_in_both_windows(keep_container_id: bool) -> None:
    options = stamped_options(keep_container_id)
    for line in STAMPED + LINES:
        assert_same([payload([line])], options=options)
    assert_same([payload(STAMPED + LINES + OTHER)] + BYTES, options=options)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["x:1|c", "y:2|g", "z:3|ms|#k:v", "s:a|s"]),
                          st.lists(st.one_of(st.integers(1699999990, 1700000020).map(lambda t: f"T{t}"),
                                             st.sampled_from(["c:abc", "c:", "#container_id:x", "@0.5", "T", "Tz"])),
                                   max_size=3)),
                min_size=1, max_size=12), st.booleans())
def test_drawn_stamps_and_container_ids_give_the_same_batches(lines, keep_container_id) -> None:
    text = ["|".join([line, *fields]) for line, fields in lines]
    assert_same([payload(text)], options=stamped_options(keep_container_id))


def test_a_metric_is_taken_only_when_stamped_in_the_open_interval_and_counted_otherwise() -> None:
    lines = ["a:1|g|T1700000000", "a:2|g|T1700000009", "b:1|c|T1699999999", "b:1|c|T1699996405",
             "c:1|c|T1700000010", "c:1:2|d|T1700000010", "d:1|c|T17x", "e:1|c",
             '{"metric_name": "j", "metric_type": "counter", "value": 4, "timestamp": 1700000009.5}',
             '{"metric_name": "j", "metric_type": "counter", "value": 4, "timestamp": 1700000010}']
    for window in window_pair(shards=1, defaults={}, options=stamped_options(False)):
        bad = fed(window, [payload(lines)], defaults={}, options=stamped_options(False))
        assert bad == {"too_old": 2, "in_future": 3, "bad_timestamp": 1}
        ((body, _, metrics, *_),) = window.take(100)[0]  # type: ignore[attr-defined]
        decoded = contract.decode_batch_body(body)
        assert (decoded.gauges, decoded.counters, metrics) == (["a", True, 2.0], ["e", 1.0, "j", 4.0], 4)


def test_a_json_timestamp_that_is_no_number_stays_a_tag_as_the_original_daemon_read_it() -> None:
    lines = ['{"metric_name": "j", "metric_type": "counter", "value": 2, "timestamp": "2026-12-05T10:00:00Z"}',
             '{"metric_name": "j", "metric_type": "counter", "value": 3, "timestamp": true}']
    for window in window_pair(shards=1, defaults={}, options=stamped_options(False)):
        assert fed(window, [payload(lines)], defaults={}, options=stamped_options(False)) == {}
        ((body, _, metrics, *_),) = window.take(100)[0]  # type: ignore[attr-defined]
        assert contract.decode_batch_body(body).counters == [
            series_key("j", ("timestamp", "2026-12-05T10:00:00Z")), 2.0, series_key("j", ("timestamp", "true")), 3.0]


def test_without_an_open_interval_a_stamp_is_read_for_its_form_only() -> None:
    out: list[Sample] = []
    bad: dict[str, int] = {}
    parse_payload(b"a:1|c|T1\nb:1|c|T\nc:1|c|c:abc", {}, out, bad)
    assert (out, bad) == ([("a", int(MetricType.COUNTER), 1.0, 1.0, ()), ("c", int(MetricType.COUNTER), 1.0, 1.0, ())],
                          {"bad_timestamp": 1})


@pytest.mark.parametrize(("keep", "expected"), [
    (False, ["ci", 1.0, series_key("ci", ("container_id", "mine")), 2.0]),
    (True, [series_key("ci", ("container_id", "abc")), 1.0, series_key("ci", ("container_id", "mine")), 2.0,
            "ci", 0.0]),
])
def test_a_container_id_becomes_a_tag_only_when_kept_and_a_later_tag_of_the_line_wins(
        keep: bool, expected: list[object]) -> None:
    lines = ["ci:1|c|c:abc", "ci:2|c|c:abc|#container_id:mine", "ci:0|c|c:"]
    windows = window_pair(shards=1, defaults={}, options=stamped_options(keep))
    for window in windows:
        assert fed(window, [payload(lines)], defaults={}, options=stamped_options(keep)) == {}
        ((body, *_),) = window.take(100)[0]  # type: ignore[attr-defined]
        assert contract.decode_batch_body(body).counters == expected
    assert windows[1].fallbacks == 0  # type: ignore[attr-defined]  # the C reads container ids itself


def totals_of(window: object) -> dict[str, object]:
    """Per series key what a take of everything holds: a counter's sum, a gauge's (was set, value), a
    timer-like entry's (count, values), a set's members."""
    out: dict[str, object] = {}
    for batches in window.take(1000):  # type: ignore[attr-defined]
        for frame, *_ in batches:
            body = contract.decode_batch_body(frame)
            out.update(zip(body.counters[::2], body.counters[1::2], strict=True))
            out.update((key, (was_set, value)) for key, was_set, value in zip(
                body.gauges[::3], body.gauges[1::3], body.gauges[2::3], strict=True))
            out.update((key, (count, list(contract.unpack_values(values)))) for key, count, values in zip(
                body.sampled[::4], body.sampled[2::4], body.sampled[3::4], strict=True))
            out.update(zip(body.sets[::2], body.sets[1::2], strict=True))
    return out


def test_a_mapping_s_scale_multiplies_each_value_of_its_series_once_as_statsd_exporter_does() -> None:
    mapping = from_yaml("mappings:\n"
                        "- match: req.*\n  name: req_total\n  scale: 0.5\n  labels: {path: $1}\n"
                        "- match: temp.*\n  name: temp\n  scale: -2\n  labels: {room: $1}\n"
                        "- match: lat\n  name: lat\n  scale: 0.001\n"  # the identity unchanged, the values scaled
                        "- match: size.*\n  name: size\n  scale: 1024\n  labels: {unit: $1}\n"
                        "- match: hits\n  name: hits\n")
    rule_set = RuleSet([mapping])
    lines = ["req.a:3|c", "req.a:4|c|@0.5", "req.b:1:2|c", "temp.x:10|g", "temp.x:+1|g", "temp.y:-3|g",
             "temp.y:+4|g", "lat:250:500|ms|@0.5", "size.kb:2|d", "hits:7|c", "other:2|c", "req.a:u|s"]
    document = json.dumps({"metric_name": "req.a", "metric_type": "counter", "value": 10}).encode()
    for window in window_pair(shards=2, defaults={}, rules=(rule_set, rule_set)):
        assert fed(window, [payload(lines), document], defaults={}) == {}
        assert totals_of(window) == {
            series_key("req_total", ("path", "a")): 3 * 0.5 + 4 / 0.5 * 0.5 + 10 * 0.5,
            series_key("req_total", ("path", "b")): 1.5,
            series_key("temp", ("room", "x")): (True, -22.0),
            series_key("temp", ("room", "y")): (False, -2.0),
            series_key("lat", ()): (4.0, [0.25, 0.5]),  # the count stays what the rate says
            series_key("size", ("unit", "kb")): (1.0, [2048.0]),
            series_key("hits", ()): 7.0,
            series_key("other", ()): 2.0,
            series_key("req.a", ()): ["u"],  # a set: statsd_exporter maps none, so none is scaled
        }


def test_a_value_its_scale_takes_out_of_range_is_refused_and_counted_as_a_bad_line_in_both_windows() -> None:
    """Values are held to MAX_MAGNITUDE so that no sum downstream overflows (a shard's timer sum of +inf and
    -inf would fail its flush): a scaled value is held to it too, each value of a packed line alone."""
    rule_set = RuleSet([from_yaml("mappings:\n- match: big.*\n  name: big\n  scale: 1e10\n  labels: {part: $1}\n")])
    lines = ["big.c:1e295|c", "big.c:1e289|c|@0.5", "big.c:2|c", "big.t:1e291:-1e291:3|ms", "big.g:-1e291|g",
             "big.g:+5|g", "big.s:1e300|s"]
    document = json.dumps([{"metric_name": "big.c", "metric_type": "counter", "value": 1e295},
                           {"metric_name": "big.c", "metric_type": "counter", "value": 1}]).encode()
    for window in window_pair(shards=1, defaults={}, rules=(rule_set, rule_set)):
        # the fallback parser's lines too: a non-ASCII tag sends a line to it
        assert fed(window, [payload(lines + ["big.c:1e295|c|#k:é", "big.c:3|c|#k:é"]), document],
                   defaults={}) == {"out_of_range": 6}
        assert window.add(("big.c", int(MetricType.COUNTER), 1e295, 1.0, ())) == "out_of_range"  # type: ignore[attr-defined]
        assert window.add(("big.c", int(MetricType.COUNTER), 1.0, 1.0, ())) is None  # type: ignore[attr-defined]
        mapped = rule_set.tally_names().index(("mapped", "mapping_config[0]"))
        assert window.tallies[mapped] == 7  # type: ignore[attr-defined]  # what was taken, no more
        assert (window.metrics, window.rule_dropped) == (8, 0)  # type: ignore[attr-defined]
        assert totals_of(window) == {
            series_key("big", ("part", "c")): 1e289 / 0.5 * 1e10 + 2 * 1e10 + 1e10 + 1e10,
            series_key("big", ("k", "é", "part", "c")): 3e10,
            series_key("big", ("part", "t")): (1.0, [3e10]),
            series_key("big", ("part", "g")): (False, 5e10),
            series_key("big.s", ()): ["1e300"],  # a set: statsd_exporter maps none
        }


def test_a_mapping_s_ttl_goes_with_its_gauges_batch_in_both_windows() -> None:
    """statsd_exporter's ttl, kept on the gauge entries the mapping files (renamed or not, set, changed, from the
    C path and the fallback parser alike) and handed per batch with their keys; the other types' and the
    unmatched gauges' entries carry none, and without rules every batch's map is empty."""
    rule_set = RuleSet([from_yaml("defaults:\n  ttl: 45s\nmappings:\n"
                                  "- match: temp.*\n  name: temp\n  ttl: 2m\n  labels: {room: $1}\n"
                                  "- match: load\n  name: load\n"  # the default's ttl, the identity unchanged
                                  "- match: req.*\n  name: req\n  labels: {path: $1}\n")])
    lines = ["temp.x:10|g", "temp.y:+1|g", "temp.z:3|g|#k:\u00e9", "load:0.5|g", "req.a:1|c", "req.a:2|g",
             "other:4|g", "lat:3|ms"]
    document = json.dumps({"metric_name": "temp.w", "metric_type": "gauge", "value": 1}).encode()
    for window in window_pair(shards=2, defaults={}, rules=(rule_set, rule_set)):
        assert fed(window, [payload(lines), document], defaults={}) == {}
        ttls: dict[str, float] = {}
        for batches in window.take(2):  # type: ignore[attr-defined]
            for *_, batch_ttls, _ in batches:
                ttls.update(batch_ttls)
        assert ttls == {series_key("temp", ("room", "x")): 120.0, series_key("temp", ("room", "y")): 120.0,
                        series_key("temp", ("k", "\u00e9", "room", "z")): 120.0,
                        series_key("temp", ("room", "w")): 120.0, series_key("load", ()): 45.0,
                        series_key("req", ("path", "a")): 45.0}
    assert_same([payload(lines), document], shards=2, max_entries=2, defaults={}, rules=(rule_set, rule_set))
    for window in window_pair(shards=2, defaults={}):
        fed(window, [payload(lines)], defaults={})
        assert all(ttls == {} for batches in window.take(2) for *_, ttls, _ in batches)  # type: ignore[attr-defined]
