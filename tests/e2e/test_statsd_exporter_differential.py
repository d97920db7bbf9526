"""``mapping_config`` against the real statsd_exporter 0.31 (the benchmark's build, bench/peers.py): the same
mapping file and the same lines, the same names, label sets and totals.

The exporter runs with ``--statsd.mapping-config`` and takes the lines over UDP; once it has handled
every one (its own events and drop counters say so) its /metrics is read. The same lines go
through pystatsd's receiver window (the compiled one where it was built) under the same file's
rules, which renames, re-tags, drops and scales them (a mapping's ``scale`` multiplies each value
there); the window's batch is then totalled as the exporter totals: a counter sums, a gauge is set
(or moved, ``+n``), a timer's samples are counted and summed in seconds (the exporter divides
milliseconds by 1000: its unit, not a mapping's doing), a histogram's as they are.

Names are compared after the sanitising statsd_exporter applies for Prometheus (``escape`` below,
its ``EscapeMetricName``): pystatsd keeps an unmatched name as sent and a mapped one unescaped, each
sink writes names as its backend wants, so only that escaping differs, and it is applied to ours.
"""

from __future__ import annotations

import math
import random
import re
import shutil
import socket
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import peers
from harness.ports import free_port
from harness.process import ProcessError
from harness.wait import wait_for
from stages.common import contract
from stages.common.model import MetricType, split_series_key
from stages.receiver.parsers import statsd_lines
from stages.receiver.rules.kind import RulesError
from stages.receiver.rules.rule_set import RuleSet
from stages.receiver.rules.statsd_exporter import from_yaml
from stages.receiver.window import new_window
from tests.unit.test_statsd_exporter_mapping import REFUSED

pytestmark = pytest.mark.e2e

MAPPING = r"""
defaults:
  observer_type: summary
mappings:
# a regex written first: the globs are still tried before it
- match: "api\\.([^.]+)\\.(get|post)\\.(.*)"
  match_type: regex
  name: "api_regex_${2}"
  labels:
    host: "$1"
    rest: "$3"
- match: api.*.*.latency
  name: api_latency
  labels:
    host: "$1"
    method: "$2"
- &hits
  match: api.*.*.hits
  name: api_hits
  honor_labels: true
  labels:
    host: "$1"
    method: "$2"
    source: mapping
# a YAML merge: the fields of the mapping above, then these
- <<: *hits
  match: api.*.*.errors
  name: api_errors
  honor_labels: false
- match: jobs.*.*
  match_metric_type: gauge
  name: jobs_queue
  labels:
    queue: "$1"
    state: "$2"
- match: jobs.*.*
  name: jobs_events
  labels:
    queue: "$1"
    kind: "$2"
- match: debug.*
  action: drop
  name: dropped
- match: "^cache-(\\w+)\\.(hit|miss)$"
  match_type: regex
  name: "cache_${2}_total"
  labels:
    pool: "$1"
# unanchored: xdb.users matches too
- match: "db\\.(\\w+)"
  match_type: regex
  match_metric_type: observer
  name: db_query
  labels:
    table: "$1"
"""


def lines(text: str) -> list[str]:
    """One statsd line per line of ``text``."""
    return text.strip().splitlines()


#: The lines sent to both.
TRAFFIC = lines("""
api.h-1.get.latency:12|ms
api.h-1.get.latency:30|ms
api.h2.post.latency:7.5|ms
api.h-1.get.hits:1|c|#source:client
api.h-1.get.hits:4|c|#source:client
api.h2.get.hits:2|c|#source:client
api.h-1.get.errors:3|c|#source:client
api.h-1.get.errors:1|c|#source:client
api.h-1.get.other.thing:5|c
api.h3.post.x:2|c
jobs.email.pending:17|g
jobs.email.pending:+3|g
jobs.email.done:4|g
jobs.email.sent:9|c
jobs.sms.sent:1|c
debug.trace:1|c
debug.latency:3|ms
cache-users.hit:6|c
cache-users.miss:2|c
cache-users.hit.extra:1|c
xdb.users:4|ms
db.orders:8|ms
db.orders:2|c
plain.counter-name:5|c|#env:test
plain.counter-name:6|c|#env:test
plain.timer:250|ms
plain.gauge:1.5|g
""")
#: The FSM's corners, ordering off: a shorter glob ending on a state a longer one made first never
#: matches, a repeated glob keeps its first mapping, a literal component is tried before ``*``,
#: ``$0`` is the whole name.
UNORDERED_MAPPING = r"""
defaults:
  glob_disable_ordering: true
mappings:
- match: a.*.*
  name: a_three
  labels:
    xx: "$1"
    yy: "$2"
- match: a.*
  name: a_two
  labels:
    xx: "$1"
- match: b.*.c
  name: b_star_c
  labels:
    xx: "$1"
- match: b.x.*
  name: b_x_star
  labels:
    yy: "$1"
- match: "*.dup"
  name: dup_first
- match: "*.dup"
  name: dup_second
- match: n.*
  name: "n_${0}_total"
- match: "q\\.(.*)"
  match_type: regex
  name: "q_$1"
"""
UNORDERED_TRAFFIC = lines("""
a.p.q:1|c
a.p:2|c
b.x.c:3|c
b.y.c:4|c
b.x.z:5|c
k.dup:6|c
n.foo:7|c
q.r:8|c
a.p.q.r:9|c
""")
#: Overlapping globs for names drawn at random from a few components, ordering on, then off.
OVERLAPPING_GLOBS = r"""
mappings:
- match: a.*.c
  name: m0
  labels: {first: "$1"}
- match: a.b.*
  name: m1
  labels: {last: "$1"}
- match: "*.b.c"
  name: m2
  labels: {head: "$1"}
- match: "*.*.*"
  name: m3
  labels: {p1: "$1", p2: "$2", p3: "$3"}
- match: a.b.c.*
  name: m4
  labels: {tail: "$1"}
- match: "*.y.*.y"
  name: m5
  labels: {one: "$1", two: "$2"}
- match: a.*
  name: m6
  labels: {sub: "$1"}
- match: "*.x"
  name: m7
  labels: {head: "$1"}
- match: "x\\.(.*)"
  match_type: regex
  name: m8
  labels: {rest: "$1"}
"""


def random_traffic(seed: int, count: int) -> list[str]:
    """``count`` counter lines on names of 1 to 4 components drawn from a, b, c, x and y."""
    draw = random.Random(seed)
    return [f"{'.'.join(draw.choice('abcxy') for _ in range(draw.randint(1, 4)))}:{draw.randint(1, 9)}|c"
            for _ in range(count)]


#: ``scale`` on every type statsd_exporter scales: counters (after their rate), gauges and their changes,
#: timers and histograms; on a renamed series, a regex's, and one whose identity the mapping leaves as
#: it was. No negative scale on a counter: statsd_exporter refuses a negative increment.
SCALED_MAPPING = r"""
mappings:
- match: api.*.latency_us
  name: api_latency
  scale: 0.001
  labels:
    host: "$1"
- match: net.*.bytes
  name: net_bits_total
  scale: 8
  labels:
    dir: "$1"
- match: room.*.temp
  name: room_temp
  scale: -0.5
  labels:
    room: "$1"
- match: "mem\\.(\\w+)\\.kib"
  match_type: regex
  name: "mem_${1}_bytes"
  scale: 1024
- match: kept
  name: kept
  scale: 2.5
- match: unscaled.*
  name: unscaled
  labels:
    part: "$1"
"""
SCALED_TRAFFIC = lines("""
api.h1.latency_us:1500|ms
api.h1.latency_us:250|ms
api.h2.latency_us:40|ms|#zone:eu
net.in.bytes:100|c
net.in.bytes:30|c|@0.5
net.out.bytes:7|c
room.a.temp:20|g
room.a.temp:+4|g
room.b.temp:-6|g
room.b.temp:+1|g
mem.heap.kib:3|g
mem.stack.kib:12|h
mem.stack.kib:0.5|h
kept:4|c|#env:test
kept:0.2|c|#env:test
unscaled.x:9|c
other.timer:80|ms
""")

#: Each scenario: the mapping file, the lines, how many the file drops.
SCENARIOS = {
    "ordered": (MAPPING, TRAFFIC, 2),
    "unordered": (UNORDERED_MAPPING, UNORDERED_TRAFFIC, 0),
    "random-ordered": (OVERLAPPING_GLOBS, random_traffic(25, 300), 0),
    "random-unordered": ("defaults:\n  glob_disable_ordering: true\n" + OVERLAPPING_GLOBS, random_traffic(26, 300), 0),
    "scaled": (SCALED_MAPPING, SCALED_TRAFFIC, 0),
}

#: A sample line of the exposition: name, optional {labels}, value.
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
#: Families of the exporter itself and of its Go runtime, not of the traffic.
OWN_FAMILIES = ("statsd_exporter_", "statsd_metric_mapper_", "go_", "process_", "promhttp_")

Series = tuple[str, frozenset[tuple[str, str]]]


def escape(name: str) -> str:
    """statsd_exporter's EscapeMetricName (pkg/mapper/escape.go): every character but [a-zA-Z0-9_] is
    ``_``, except a ``-`` after a ``-``, which is dropped; a leading digit gets a ``_`` before it."""
    out, previous = [], ""
    for char in name:
        if char.isascii() and (char.isalnum() or char == "_"):
            out.append(char)
        elif not (char == "-" and previous == "-"):
            out.append("_")
        previous = char
    text = "".join(out)
    return "_" + text if text[:1].isdigit() else text


class MappedExporter(peers.ExporterPeer):
    """The benchmark's statsd_exporter, started with a mapping file."""

    def __init__(self, mapping_file: Path) -> None:
        super().__init__()
        self.mapping_file = mapping_file

    def _command(self) -> list[str]:
        return [*super()._command(), f"--statsd.mapping-config={self.mapping_file}"]


def scrape(text: str) -> dict[Series, float]:
    """Every sample of /metrics but the exporter's own, by (sample name, label set)."""
    samples = {}
    for line in text.splitlines():
        found = SAMPLE.match(line)
        if not found or line.startswith("#"):
            continue
        name, labels, value = found.groups()
        samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def ours(text: str, traffic: list[str]) -> tuple[dict[Series, float], int]:
    """``traffic`` through pystatsd's receiver window under the rules of the file ``text`` (renamed,
    re-tagged, dropped and scaled there), its batch totalled as the exporter totals: the samples, and the
    samples the rules dropped."""
    window = new_window(1, (), statsd_lines({}), RuleSet([from_yaml(text)]))
    bad: dict[str, int] = {}
    window.feed(["\n".join(traffic).encode()], 0, bad)
    assert bad == {} and window.metrics + window.rule_dropped == sum(
        line.split("|", 1)[0].count(":") for line in traffic)
    totals: dict[Series, float] = defaultdict(float)

    def series(key: str, suffix: str = "") -> Series:
        name, tags = split_series_key(key)
        return escape(name) + suffix, frozenset(zip(tags[::2], tags[1::2], strict=True))

    for frame, *_ in window.take(1_000_000)[0]:
        body = contract.decode_batch_body(frame)
        for key, total in zip(body.counters[::2], body.counters[1::2], strict=True):
            totals[series(key)] += total
        for key, _, value in zip(body.gauges[::3], body.gauges[1::3], body.gauges[2::3], strict=True):
            totals[series(key)] = value  # one entry per series: the value set plus later changes, or the changes
        for key, mtype, count, values in zip(*(body.sampled[i::4] for i in range(4)), strict=True):
            unit = 1000 if mtype == MetricType.TIMER else 1  # the exporter's seconds from milliseconds
            totals[series(key, "_count")] += count
            totals[series(key, "_sum")] += sum(contract.unpack_values(values)) / unit
    return dict(totals), window.rule_dropped


def exporter_counter(samples_text: str, family: str) -> float:
    """The sum of one of the exporter's own counters over its labels."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in samples_text.splitlines()
               if line.startswith((family + " ", family + "{")))


def built_exporter(tmp_path: Path) -> MappedExporter:
    """The benchmark's statsd_exporter, built by its own install (once, cached) where Go is."""
    peer = MappedExporter(tmp_path / "mapping.yml")
    if not peer.installed() and shutil.which("go") is None:
        pytest.skip("statsd_exporter is not built and there is no Go to build it (make bench builds it)")
    peer.install()
    return peer


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[MappedExporter, str]]:
    """The exporter started with one scenario's mapping file, and the scenario's name."""
    peer = built_exporter(tmp_path)
    peer.mapping_file.write_text(SCENARIOS[request.param][0])
    peer.start(free_port(), 1.0, tmp_path)
    yield peer, request.param
    peer.stop()


def test_the_same_file_and_lines_give_the_exporter_s_names_labels_and_totals(
        scenario: tuple[MappedExporter, str]) -> None:
    exporter, which = scenario
    mapping_text, traffic, drops = SCENARIOS[which]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for line in traffic:
            sock.sendto(line.encode(), ("127.0.0.1", exporter.port))

    def handled() -> str | None:
        text = exporter._scrape()
        done = exporter_counter(text, "statsd_exporter_events_total") + exporter_counter(
            text, 'statsd_exporter_events_actions_total{action="drop"}')
        return text if done >= len(traffic) else None

    text = wait_for(handled, 15, f"statsd_exporter to handle all {len(traffic)} lines")
    assert exporter_counter(text, "statsd_exporter_events_conflict_total") == 0
    assert exporter_counter(text, "statsd_exporter_events_error_total") == 0
    theirs = {series: value for series, value in scrape(text).items()
              if not series[0].startswith(OWN_FAMILIES) and not any(key == "quantile" for key, _ in series[1])}
    expected, dropped = ours(mapping_text, traffic)
    assert exporter_counter(text, 'statsd_exporter_events_actions_total{action="drop"}') == dropped == drops
    assert sorted(theirs, key=str) == sorted(expected, key=str)
    for series, value in expected.items():
        assert math.isclose(theirs[series], value, rel_tol=1e-9), series


@pytest.mark.parametrize(("text", "where"), REFUSED, ids=[where for _, where in REFUSED])
def test_the_exporter_refuses_every_file_refused_here(tmp_path: Path, text: str, where: str) -> None:
    peer = built_exporter(tmp_path)
    peer.mapping_file.write_text(text)
    with pytest.raises(ProcessError, match="error loading config"):
        peer.start(free_port(), 1.0, tmp_path)
    with pytest.raises(RulesError, match=rf"^mapping_config: {re.escape(where)}: "):
        from_yaml(text)
