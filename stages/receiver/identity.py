"""The seam for rules: where a parsed metric's identity (name, tags, type) may be rewritten or dropped.

Both batch windows (:mod:`.window`: PyWindow and the compiled one) ask it once per distinct series,
just before the series is given its entry and its shard: a renamed series lands on its new name's
shard, and two series a rule gives the same new identity are one entry from then on (removed tags
merge series before anything is counted).

A window takes ``rules``, a :class:`Rules` callable, or None (no rules: no call, no lookup, nothing
paid). ``rules(name, mtype, tags)`` sees the whole identity as the window files it: ``mtype`` the
type the series is filed under (a gauge change is a :data:`~stages.common.model.MetricType.GAUGE`),
``tags`` the flat ``(k1, v1, k2, v2, ...)`` of the series key, sorted by key, the agent's default
tags already merged in. It returns None (unchanged), :data:`DROP`, or ``(new_name, new_tags)``
(flat too; in any order, a repeated key's last value wins: :func:`answer` sorts them), or any of
these inside :class:`Decided`, which adds a *tally*: a small number (``0 <= tally < MAX_TALLIES``)
under which each window counts the samples filed by that answer (``tallies``), so that per-rule
counts cost one addition per sample (the rule set says what each number stands for:
:mod:`stages.receiver.rules.rule_set`), and may add a *scale* (a finite float, statsd_exporter's
``scale``): each window multiplies the value of every sample the answer files by it, once per sample,
as statsd_exporter does (a counter's value / rate, a gauge's value or change, each timer, histogram or
distribution value; a set's members and a trace's count are no values and stay as sent); without a
scale (None) nothing is multiplied. A value its scale takes beyond :data:`MAX_MAGNITUDE` (the bound
every parser holds a value to, so that no sum downstream overflows) is not taken: the window counts
that sample as a bad line, ``out_of_range``, as a parser counts a value beyond it, and its answer's
tally does not count it. It may add a *ttl* too (positive finite seconds, statsd_exporter's ``ttl``):
each window keeps it on the gauge entries the answer files and hands it with their batch
(``gauge_ttls``, :mod:`stages.common.contract`), and the shard forgets such a gauge once idle for
``ceil(ttl / flush_interval)`` intervals instead of ``expire_after_intervals``; on the other types it
does nothing (they live one interval). Without a ttl (None) the shard's default applies.

Each window keeps the answers, misses (None) included, per (type, series key) in a cache of at most
``cache_size`` series (:data:`CACHE_SIZE` unless told), emptied whenever a new series would
overflow it: a rule is decided once per distinct name, type and tag set while the cache holds it.
The answers are what :func:`answer` makes of a decision; a reload restarts the receiver in place,
so new rules come with a new window and an empty cache. What a rule drops is counted in the
window's ``rule_dropped``, never lost silently; with tallies, in ``tallies[tally]`` as well.
"""

from __future__ import annotations

import enum
import math
from typing import Literal, NamedTuple, Protocol

from stages.common.model import KEY_SEPARATOR, Tags, series_key, tag_tuple
from stages.receiver.parsers.base import MAX_MAGNITUDE as MAX_MAGNITUDE  # the windows hold scaled values to it

#: The reason a window counts a sample under when its rule's scale takes its value beyond MAX_MAGNITUDE.
OUT_OF_RANGE = "out_of_range"


class Drop(enum.Enum):
    DROP = "drop"


#: What :class:`Rules` returns for a metric it drops.
DROP = Drop.DROP

#: None (unchanged), DROP, or the new (name, flat tags).
Decision = tuple[str, Tags] | Literal[Drop.DROP] | None

#: What a window caches per (type, series key): None (unchanged), False (dropped), or the new series key.
Answer = str | Literal[False] | None

#: Tallies a rule set may use (a window keeps a count per tally up to the highest it was given).
MAX_TALLIES = 1 << 16
#: The tally of an answer that names none (a plain :data:`Decision`): counted in no tally.
NO_TALLY = -1


class Decided(NamedTuple):
    """A :data:`Decision`, the tally its samples are counted under, the scale of their values and the ttl
    of its gauges in seconds (None: none)."""

    tally: int
    decision: Decision
    scale: float | None = None
    ttl: float | None = None


#: What a window caches per (type, series key): the :data:`Answer`, its tally, its scale and its ttl.
Answered = tuple[Answer, int, float | None, float | None]

#: Series whose answers a window keeps (a few hundred bytes each in the compiled window, in Python more).
CACHE_SIZE = 1 << 18


class Rules(Protocol):
    def __call__(self, name: str, mtype: int, tags: Tags, /) -> Decision | Decided:
        """What becomes of the series ``name``/``tags`` of type ``mtype`` (see the module's docs)."""


def answer(rules: Rules, name: str, mtype: int, tags: Tags) -> Answered:
    """``rules``' decision on one series, as the windows cache it: None, False, or the new series key
    (built as :func:`~stages.common.model.series_key` builds every key: the tags sorted by key), its
    tally (:data:`NO_TALLY` when the decision names none), its scale and its ttl (floats, or None)."""
    decision = rules(name, mtype, tags)
    tally, scale, ttl = NO_TALLY, None, None
    if isinstance(decision, Decided):
        tally, decision, scale, ttl = decision
        if not isinstance(tally, int) or not 0 <= tally < MAX_TALLIES:
            raise ValueError(f"rules: tally {tally!r} for {name!r} is not from 0 to {MAX_TALLIES - 1}")
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
                raise ValueError(f"rules: scale {scale!r} for {name!r} is no finite number")
            scale = float(scale)
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
                raise ValueError(f"rules: ttl {ttl!r} for {name!r} is no positive finite number of seconds")
            ttl = float(ttl)
    return _answer(decision, name), tally, scale, ttl


def _answer(decision: Decision, name: str) -> Answer:
    if decision is None:
        return None
    if decision is DROP:
        return False
    new_name, new_tags = decision
    if not isinstance(new_name, str) or not new_name or KEY_SEPARATOR in new_name:
        raise ValueError(f"rules: {new_name!r} for {name!r} is no metric name (a non-empty str without \\x1f)")
    if not isinstance(new_tags, tuple) or len(new_tags) % 2:
        raise ValueError(f"rules: the tags for {name!r} must be a flat (k1, v1, ...) tuple, not {new_tags!r}")
    for text in new_tags:
        if not isinstance(text, str) or KEY_SEPARATOR in text:
            raise ValueError(f"rules: tag {text!r} for {name!r} is no str without \\x1f")
    return series_key(new_name, tag_tuple(dict(zip(new_tags[::2], new_tags[1::2], strict=True)), {}))


class Answers:
    """PyWindow's cache of :func:`answer` per (type, series key), and its tallies; the compiled window keeps
    its own, alike."""

    __slots__ = ("rules", "size", "tallies", "_answers")

    def __init__(self, rules: Rules, size: int = CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError("cache_size: at least 1")
        self.rules = rules
        self.size = size
        #: Samples filed per tally, since the window was made: as long as the highest tally given needs.
        self.tallies: list[int] = []
        self._answers: dict[tuple[int, str], Answered] = {}

    def of(self, kind: int, key: str, name: str, tags: Tags) -> Answered:
        """The answer, tally, scale and ttl for the series ``key`` (of ``name`` and ``tags``) of type ``kind``;
        asked once while held."""
        try:
            return self._answers[(kind, key)]
        except KeyError:  # None is an answer too: a miss is a missing key, rare once the series are known
            pass
        if len(self._answers) >= self.size:
            self._answers.clear()
        got = self._answers[(kind, key)] = answer(self.rules, name, kind, tags)
        if got[1] >= len(self.tallies):
            self.tallies.extend([0] * (got[1] + 1 - len(self.tallies)))
        return got
