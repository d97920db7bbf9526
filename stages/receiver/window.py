"""The receiver's batch window: samples accumulated per series until they leave as ``pystatsd.batch.v2``.

Within a window each series is one entry: a counter's sum of value / rate, a gauge's last value with
the changes after it (or the sum of changes alone), a timer's values in arrival order with its
rate-corrected count, a set's members once each. :meth:`PyWindow.take` cuts each shard's entries
into batch bodies (see :mod:`stages.common.contract`) and leaves the window empty.

:class:`PyWindow` is the specification. ``stages.receiver._window.Window`` (window.c, built by
``pip install`` where a C compiler is found) is the same, compiled: it parses plain statsd lines
itself, counts the common bad lines under the reason the parsers give them, and hands every other
line to the same ``parse_lines`` callable (its ``fallbacks`` counts those). :func:`new_window` picks
it when it was built; the property tests prove both give the same batches and bad-line counts.

A window reads no socket, and imports no parser: its ``parse_lines`` (the statsd parser, see
:func:`stages.receiver.parsers.statsd_lines`) is given to it, and the Python window hands it every
line. Given ``rules`` (:mod:`.identity`), each window asks them what becomes of each new series
before it is given an entry and a shard, multiplies the values of its samples by the answer's scale
when it has one, keeps its ttl on the gauge entries it files (handed on with each batch: the
:data:`Batch`'s ``gauge_ttls``), and counts what they drop in ``rule_dropped`` and the samples of each answer's tally
in ``tallies``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from stages.common import compiled, contract
from stages.common.model import MetricType, Sample, Tags, series_key, series_name
from stages.common.sharding import shard_for
from stages.receiver.identity import CACHE_SIZE, MAX_MAGNITUDE, OUT_OF_RANGE, Answers, Rules

if TYPE_CHECKING:
    from stages.receiver import _window
CompiledWindow: type[_window.Window] | None
try:
    from stages.receiver._window import Window as CompiledWindow
except ImportError:  # built by pip install where a C compiler is found; PyWindow does the same job
    CompiledWindow = None

log = logging.getLogger(__name__)

COUNTER = int(MetricType.COUNTER)
GAUGE = int(MetricType.GAUGE)
GAUGE_DELTA = int(MetricType.GAUGE_DELTA)
SET = int(MetricType.SET)
TRACE = int(MetricType.TRACE)

#: ``parse_lines(data, out, bad)``: the samples of every good statsd line in ``data`` appended to
#: ``out``, each bad line counted in ``bad`` by reason.
LineParser = Callable[[bytes, list[Sample], dict[str, int]], None]
#: ``parse_payload(data, out, bad)``: the samples of one payload in any format (the parsers' routing rule).
PayloadParser = Callable[[bytes, list[Sample], dict[str, int]], None]
#: Per batch, its gauges' keys with a rule's ttl in seconds (:mod:`.identity`); empty when none has one.
GaugeTtls = dict[str, float]
#: (body, entries, metrics, gauge ttls, entry metrics) of one batch: the last, each entry's metrics in body order
#: (:func:`stages.common.contract.pack_entry_metrics`)
Batch = tuple[bytes, int, int, GaugeTtls, bytes]


class Window(Protocol):
    """What the receiver uses of a window; both implementations have exactly this."""

    @property
    def metrics(self) -> int:
        """Samples taken in since the last :meth:`take`."""

    @property
    def entries(self) -> int:
        """Distinct series entries held."""

    @property
    def shard_metrics(self) -> list[int]:
        """Per shard, the samples taken in since the last :meth:`take` (what a kill would lose of each)."""

    @property
    def rule_dropped(self) -> int:
        """Samples the rules dropped since the window was made."""

    @property
    def tallies(self) -> list[int]:
        """Per tally the rules' answers named (:mod:`.identity`), the samples filed under it since the window
        was made, dropped ones too; as long as the highest tally given needs (empty without rules)."""

    def feed(self, payloads: list[bytes], start: int, bad: dict[str, int]) -> int:
        """Take ``payloads[start:]`` as statsd lines, up to the first that may hold a JSON document (the
        caller routes it); returns that payload's index, or the length. PyWindow leaves every payload
        holding ``{`` or ``[``; the compiled window only one with a line that starts a document it cannot
        refuse itself (the routing rule reads every other as statsd lines: the same result)."""

    def add(self, sample: Sample) -> str | None:
        """Take one sample a parser made; the reason it was not taken (:data:`~.identity.OUT_OF_RANGE`: its
        rule's scale took its value out of range), for the caller to count as a bad line, or None."""

    def add_own(self, sample: Sample) -> None:
        """Take one of the receiver's own samples (its self-metrics): filed as it is, the rules not asked,
        so that a rule neither renames nor drops them and what the rules count is what clients sent."""

    def take(self, max_entries: int) -> list[list[Batch]]:
        """Per shard, its entries cut into batches of at most ``max_entries``, each with its gauges' ttls
        (:data:`Batch`); the window is empty after."""


class _Entry:
    __slots__ = ("kind", "key", "shard", "metrics", "was_set", "value", "values", "members", "ttl")

    def __init__(self, kind: int, key: str, shard: int) -> None:
        self.kind = kind
        self.key = key
        self.shard = shard
        self.metrics = 0
        self.was_set = False
        #: counter sum, gauge value, timer or trace count
        self.value = 0.0
        self.values: list[float] = []
        self.members: dict[str, None] = {}
        #: a gauge's ttl in seconds, as the rules' answer at its last sample gave it (None: none)
        self.ttl: float | None = None


class PyWindow:
    def __init__(self, shards: int, defaults: Tags, parse_lines: LineParser, rules: Rules | None = None,
                 cache_size: int = CACHE_SIZE) -> None:
        if shards < 1:
            raise ValueError("shards: at least 1")
        #: None without rules: add() then pays one comparison for them.
        self._answers = Answers(rules, cache_size) if rules is not None else None
        self.rule_dropped = 0
        self.shards = shards
        #: The agent's default tags: the compiled window merges them into the lines it parses itself;
        #: here parse_lines, which parses every line, does (the two take the same arguments).
        self.defaults = defaults
        self.parse_lines = parse_lines
        self.metrics = 0
        self.shard_metrics = [0] * shards
        self._entries: dict[tuple[int, str], _Entry] = {}
        self._by_shard: list[list[_Entry]] = [[] for _ in range(shards)]

    @property
    def entries(self) -> int:
        return len(self._entries)

    @property
    def tallies(self) -> list[int]:
        return list(self._answers.tallies) if self._answers is not None else []

    def feed(self, payloads: list[bytes], start: int, bad: dict[str, int]) -> int:
        end = max(start, 0)
        while end < len(payloads) and b"{" not in payloads[end] and b"[" not in payloads[end]:
            end += 1
        if end > start:
            # Lines stand on their own: one call for the whole run of payloads.
            samples: list[Sample] = []
            self.parse_lines(b"\n".join(payloads[start:end]), samples, bad)
            for sample in samples:
                count_refused(self.add(sample), bad)
        return end

    def add(self, sample: Sample) -> str | None:
        # A sample's value is a float for every kind but a set's member, a str (the parser makes it so). The
        # checker cannot follow the kind, and a cast or an isinstance per sample would cost this fallback path.
        value: Any
        name, mtype, value, rate, tags = sample
        kind = GAUGE if mtype == GAUGE_DELTA else mtype
        key = series_key(name, tags)
        scaled = ttl = None
        if self._answers is not None:
            answer, tally, scale, ttl = self._answers.of(kind, key, name, tags)
            if answer is False:
                if tally >= 0:
                    self._answers.tallies[tally] += 1
                self.rule_dropped += 1
                return None
            if scale is not None and kind < SET:
                # A rule's scale multiplies each value once, as statsd_exporter does (a counter's after its
                # rate); what it takes out of range is refused before anything of the sample is counted.
                scaled = value / rate * scale if kind == COUNTER else value * scale
                if not abs(scaled) <= MAX_MAGNITUDE:
                    return OUT_OF_RANGE
            if tally >= 0:
                self._answers.tallies[tally] += 1
            if answer is not None:
                key = answer
                name = series_name(key)
        entry = self._entries.get((kind, key))
        if entry is None:
            entry = self._entries[(kind, key)] = _Entry(kind, key, shard_for(name, self.shards))
            self._by_shard[entry.shard].append(entry)
        entry.metrics += 1
        self.metrics += 1
        self.shard_metrics[entry.shard] += 1
        if kind == COUNTER:
            entry.value += value / rate if scaled is None else scaled
        elif mtype == GAUGE:
            entry.was_set = True
            entry.value = float(value) if scaled is None else scaled
            entry.ttl = ttl
        elif mtype == GAUGE_DELTA:
            entry.value += value if scaled is None else scaled
            entry.ttl = ttl
        elif kind == SET:
            entry.members.setdefault(value, None)
        elif kind == TRACE:
            entry.value += 1.0 / rate
        else:
            entry.values.append(float(value) if scaled is None else scaled)
            entry.value += 1.0 / rate
        return None

    def add_own(self, sample: Sample) -> None:
        answers, self._answers = self._answers, None
        try:
            self.add(sample)  # no rules: no scale, nothing refused
        finally:
            self._answers = answers

    def take(self, max_entries: int) -> list[list[Batch]]:
        if max_entries < 1:
            raise ValueError("take: max_entries must be at least 1")
        out = []
        for entries in self._by_shard:
            out.append([_batch(entries[start:start + max_entries]) for start in range(0, len(entries), max_entries)])
        self._entries = {}
        self._by_shard = [[] for _ in range(self.shards)]
        self.metrics = 0
        self.shard_metrics = [0] * self.shards
        return out


def _batch(entries: list[_Entry]) -> Batch:
    body = contract.BatchBody.empty()
    ttls: GaugeTtls = {}
    #: each section's entries' metrics, in the body's section order
    counts: tuple[list[int], ...] = ([], [], [], [], [])
    for entry in entries:
        kind = entry.kind
        if kind == COUNTER:
            body.counters.extend((entry.key, entry.value))
            counts[0].append(entry.metrics)
        elif kind == GAUGE:
            body.gauges.extend((entry.key, entry.was_set, entry.value))
            counts[1].append(entry.metrics)
            if entry.ttl is not None:
                ttls[entry.key] = entry.ttl
        elif kind == SET:
            body.sets.extend((entry.key, list(entry.members)))
            counts[3].append(entry.metrics)
        elif kind == TRACE:
            body.traces.extend((entry.key, entry.value))
            counts[4].append(entry.metrics)
        else:
            body.sampled.extend((entry.key, kind, entry.value, contract.pack_values(entry.values)))
            counts[2].append(entry.metrics)
    in_order = [count for section in counts for count in section]
    return (contract.pack_batch_body(body), len(entries), sum(in_order), ttls,
            contract.pack_entry_metrics(in_order))


def count_refused(reason: str | None, bad: dict[str, int]) -> None:
    """A sample :meth:`Window.add` refused (``reason``, None when taken) counted in ``bad`` as a bad line."""
    if reason is not None:
        bad[reason] = bad.get(reason, 0) + 1


def take_payloads(window: Window, payloads: list[bytes], parse_payload: PayloadParser, bad: dict[str, int]) -> None:
    """Every payload into ``window``, in order: statsd runs by the window itself, the rest by ``parse_payload``."""
    taken = 0
    while taken < len(payloads):
        taken = window.feed(payloads, taken, bad)
        if taken < len(payloads):
            samples: list[Sample] = []
            parse_payload(payloads[taken], samples, bad)
            for sample in samples:
                count_refused(window.add(sample), bad)
            taken += 1


def new_window(shards: int, defaults: Tags, parse_lines: LineParser, rules: Rules | None = None,
               keep_container_id: bool = False) -> Window:
    """The compiled window where it was built (see :mod:`stages.common.compiled`), else :class:`PyWindow`; each
    asks ``rules`` (see :mod:`.identity`) what becomes of each new series, None for no rules.
    ``keep_container_id`` must be what ``parse_lines`` was given (the compiled window reads lines itself)."""
    if compiled.wanted() and CompiledWindow is not None:
        return CompiledWindow(shards, defaults, parse_lines, rules, CACHE_SIZE, keep_container_id)
    if CompiledWindow is None:
        log.info("Parsing in Python: the compiled window was not built when pystatsd was installed")
    else:
        log.info("Parsing in Python: PYSTATSD_PURE_PYTHON is set")
    return PyWindow(shards, defaults, parse_lines, rules)
