"""Property tests of the parsers: nothing escapes, bad lines are counted, good lines survive and round-trip."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.model import MetricType
from stages.receiver.parsers import parse_payload

NAME = st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True)
TAG_TEXT = st.from_regex(r"[a-z0-9_.-]{1,10}", fullmatch=True)
TAGS = st.dictionaries(TAG_TEXT, TAG_TEXT, max_size=5)
VALUE = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
RATE = st.sampled_from([1.0, 0.5, 0.25, 0.1, 0.01])
CODES = {"c": MetricType.COUNTER, "ms": MetricType.TIMER, "h": MetricType.HISTOGRAM, "d": MetricType.DISTRIBUTION}


@st.composite
def statsd_lines(draw: st.DrawFn) -> tuple[str, tuple]:
    """A valid line and the sample it must parse to."""
    name, code, value, rate, tags = draw(NAME), draw(st.sampled_from(sorted(CODES))), draw(VALUE), draw(RATE), \
        draw(TAGS)
    text = f"{name}:{value!r}|{code}"
    if rate != 1.0:
        text += f"|@{rate}"
    if tags:
        text += "|#" + ",".join(f"{k}:{v}" for k, v in tags.items())
    flat = tuple(x for key in sorted(tags) for x in (key, tags[key]))
    return text, (name, int(CODES[code]), value, rate, flat)


def parse(data: bytes) -> tuple[list, dict[str, int]]:
    out: list = []
    bad: dict[str, int] = {}
    parse_payload(data, {}, out, bad)
    return out, bad


def assert_sane(out: list) -> None:
    for name, _, value, rate, tags in out:
        assert name and not any(ord(ch) < 32 for ch in name)
        assert 0 < rate <= 1
        assert isinstance(value, str) or math.isfinite(value)
        assert len(tags) % 2 == 0


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_and_yield_only_sane_samples(data: bytes) -> None:
    out, bad = parse(data)
    assert_sane(out)
    assert all(count > 0 for count in bad.values())


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=500))
def test_arbitrary_text_never_raises(text: str) -> None:
    out, _ = parse(text.encode("utf-8", "surrogatepass"))
    assert_sane(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(statsd_lines(), min_size=1, max_size=20))
def test_valid_lines_round_trip(lines: list[tuple[str, tuple]]) -> None:
    out, bad = parse("\n".join(text for text, _ in lines).encode())
    assert bad == {}
    assert out == [sample for _, sample in lines]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(statsd_lines().map(lambda pair: (pair[0], pair[1])),
                          st.text(alphabet="abc:|@#,=.01x ", max_size=15).map(lambda junk: (junk, None))),
                min_size=1, max_size=30))
def test_every_line_is_a_sample_or_a_counted_bad_line(lines: list[tuple[str, tuple | None]]) -> None:
    # Junk that happens to be valid statsd is fine; each non-empty line yields at least one sample or one count.
    text = "\n".join(line for line, _ in lines)
    out, bad = parse(text.encode())
    non_empty = [line for line in text.split("\n") if line]
    assert len(out) + sum(bad.values()) >= len(non_empty)
    assert sum(bad.values()) <= len(non_empty)
    for _, sample in lines:
        if sample is not None:
            assert sample in out, "a good line was lost beside bad ones"


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children,
                                                                                       max_size=4),
                    max_leaves=30))
def test_any_json_value_is_parsed_or_counted(document: object) -> None:
    out, bad = parse(json.dumps(document).encode())
    assert_sane(out)
    assert out or bad or document == [], "an object, array member or scalar vanished uncounted"
