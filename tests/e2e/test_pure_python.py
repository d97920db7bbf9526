"""Without the compiled parts (PYSTATSD_PURE_PYTHON=1, as on a machine with no compiler) the pipeline
delivers exactly what it delivers with them: the same datagrams into both, the same rules, the same
aggregates out."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from harness.pipeline import Pipeline
from harness.wait import wait_for
from tests.compiled_parts import needs_compiled_bucket, needs_compiled_window
from tests.unit.lines import BYTES, LINES, OTHER

pytestmark = [pytest.mark.e2e,
              needs_compiled_window,
              needs_compiled_bucket]

INTERVAL = 4.0
#: Rules on part of the mix (both windows ask them, and must file alike): timers renamed into one name,
#: a tag removed from gauges (merging their series), some sets dropped.
RULES = [{"match": "mix.t*", "name": "mix.timer", "tags": {"series": "$1"}},
         {"match": "mix.g*", "match_metric_type": "gauge", "drop_tags": ["route"]},
         {"match": "mix.s1*", "drop": True}]
#: Every timer-like of the mix and of the hand-picked lines counted into buckets, alike in both.
BUCKETS = [{"match": "mix.timer", "buckets": [5, 20.08, 50, 200]}, {"match": "*", "buckets": [-1, 0, 1, 1e6]}]


def datagrams(rng: random.Random) -> list[bytes]:
    """Hand-picked lines of every dialect and fault, and a realistic mix of varying values, in datagrams."""
    mix = []
    for _ in range(3000):
        series = rng.randrange(200)
        kind = rng.random()
        tags = f"|#env:prod,host:web{series % 7},route:/r{series % 5}"
        if kind < 0.5:
            mix.append(f"mix.c{series}:1|c{tags}")
        elif kind < 0.8:
            mix.append(f"mix.t{series}:{rng.lognormvariate(3, 1):.2f}|ms|@0.5{tags}")
        elif kind < 0.95:
            mix.append(f"mix.g{series}:{rng.choice(['', '+', '-'])}{rng.randrange(100)}|g{tags}")
        else:
            mix.append(f"mix.s{series}:u{rng.randrange(50)}|s{tags}")
    lines = mix + LINES + OTHER
    rng.shuffle(lines)
    out = [("\n".join(lines[i:i + 20])).encode("utf-8", "surrogatepass") for i in range(0, len(lines), 20)]
    return out + BYTES


def comparable(aggregates: list[dict[str, Any]]) -> list[str]:
    """Every aggregate but the daemon's own, as sorted JSON (flush times and orders aside)."""
    return sorted(json.dumps(a, sort_keys=True) for a in aggregates if not a["name"].startswith("pystatsd."))


def test_the_python_pipeline_delivers_exactly_what_the_compiled_one_does() -> None:
    compiled = Pipeline(config={"rules": RULES, "histogram_buckets": BUCKETS}, flush_interval=INTERVAL)
    python = Pipeline(config={"rules": RULES, "histogram_buckets": BUCKETS}, flush_interval=INTERVAL)
    python.env["PYSTATSD_PURE_PYTHON"] = "1"
    with compiled, python:
        assert "batches merged in Python" in python.log("aggregator-0")
        assert "batches merged in C" in compiled.log("aggregator-0")
        compiled.wait_interval_start()
        for data in datagrams(random.Random(7)):
            compiled.send(data, compiled.statsd_port)
            python.send(data, python.statsd_port)
        first = wait_for(lambda: min((a["timestamp"] for a in compiled.aggregates() if a["name"].startswith("mix.")),
                                     default=None), 3 * INTERVAL, "the mix's interval")
        wait_for(lambda: compiled.shards_flushed_after(first) and python.shards_flushed_after(first), 3 * INTERVAL,
                 "both pipelines to flush the mix's interval whole")
        in_first = [[a for a in pipeline.aggregates() if a["timestamp"] == first] for pipeline in (compiled, python)]
        assert comparable(in_first[0]) == comparable(in_first[1])
        assert any(a["name"] == "mix.timer" for a in in_first[0])
        assert all(a["buckets"]["counts"][-1] == a["stats"]["count"] for a in in_first[0] if a["name"] == "mix.timer")
        assert sum(a["value"] for a in in_first[0] if a["name"].startswith("mix.c")) == sum(
            1 for data in datagrams(random.Random(7)) for line in data.split(b"\n") if line.startswith(b"mix.c"))
