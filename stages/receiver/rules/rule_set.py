"""The rules the config gives, as the receiver's seam asks them (:class:`stages.receiver.identity.Rules`).

:func:`load_rule_set` loads each kind of :mod:`.registry` the config gives rules for; the
:class:`RuleSet` asks them in that order. A kind's outcome ends the search unless it carries on (a
native rule's ``continue``): then the next kinds see the identity it made. The rule that decided is
the last one that matched (its scale and ttl, if it gives them, are the series'); its series are counted under
one of its tallies (mapped or dropped), the series no rule matched under :data:`UNMATCHED`, so the
windows count every sample under exactly one (:meth:`RuleSet.tally_names` says which is which, for
the self-metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from stages.common.config import Config
from stages.common.model import Tags, tags_dict
from stages.receiver.identity import DROP, Decided, Decision

from .kind import RuleKind, RulesError
from .registry import KINDS

#: The tally of the series no rule matched.
UNMATCHED = 0
MAPPED = "mapped"
DROPPED = "dropped"


class Tally(NamedTuple):
    """What a tally counts: ``outcome`` (``unmatched``, ``mapped`` or ``dropped``) and the rule that decided."""

    outcome: str
    rule: str | None


class Verdict(NamedTuple):
    """What the rules make of one series, which rule decided (None: none matched), and the scale of its
    values that rule gives (None: none; statsd_exporter's ``scale``, even where the identity stays), and
    the ttl of its gauges (seconds, None: none; statsd_exporter's ``ttl``)."""

    decision: Decision
    rule: str | None
    scale: float | None = None
    ttl: float | None = None


class RuleSet:
    """Every kind's rules, in the registry's order: the seam's ``Rules`` callable."""

    def __init__(self, kinds: list[RuleKind]) -> None:
        self.kinds = kinds
        self._tallies: list[Tally] = [Tally("unmatched", None)]
        self._by_rule: dict[tuple[str, str], int] = {}
        for kind in kinds:
            for rule in kind.rule_names():
                self._tally(MAPPED, rule)
                self._tally(DROPPED, rule)

    def __call__(self, name: str, mtype: int, tags: Tags, /) -> Decided:
        decision, rule, scale, ttl = self.verdict(name, mtype, tags)
        if rule is None:
            return Decided(UNMATCHED, None)
        return Decided(self._tally(DROPPED if decision is DROP else MAPPED, rule), decision, scale, ttl)

    def verdict(self, name: str, mtype: int, tags: Tags) -> Verdict:
        """The decision on the series ``name``/``tags`` of type ``mtype`` (None when the rules leave it as
        it is), the rule that decided, its scale and its ttl."""
        decided, scale, ttl = None, None, None
        new_name, new_tags = name, tags
        for kind in self.kinds:
            outcome = kind.decide(new_name, mtype, new_tags)
            if outcome is None:
                continue
            if outcome.drop:
                return Verdict(DROP, outcome.rule)
            decided, new_name, new_tags = outcome.rule, outcome.name, outcome.tags
            scale, ttl = outcome.scale, outcome.ttl
            if not outcome.carry_on:
                break
        if decided is None or (new_name == name and tags_dict(new_tags) == tags_dict(tags)):
            return Verdict(None, decided, scale, ttl)
        return Verdict((new_name, new_tags), decided, scale, ttl)

    @property
    def rule_count(self) -> int:
        """The rules of every kind."""
        return sum(len(kind.rule_names()) for kind in self.kinds)

    def tally_names(self) -> list[Tally]:
        """What each tally counts, by its number."""
        return list(self._tallies)

    def _tally(self, outcome: str, rule: str) -> int:
        """The tally of ``rule``'s ``outcome``, made on first use (a kind naming a rule it did not list)."""
        number = self._by_rule.get((outcome, rule))
        if number is None:
            number = self._by_rule[(outcome, rule)] = len(self._tallies)
            self._tallies.append(Tally(outcome, rule))
        return number


def load_rule_set(config: Config, config_dir: Path) -> RuleSet | None:
    """The config's rules (relative paths from ``config_dir``), None when it gives none; RulesError naming
    the key of the first kind that cannot be loaded."""
    kinds, problems = _load_kinds(config, config_dir)
    if problems:
        raise problems[0]
    return RuleSet(kinds) if kinds else None


def rule_problems(config: Config, config_dir: Path) -> list[str]:
    """What keeps the config's rules from loading, one problem per kind, each naming its key."""
    return [str(problem) for problem in _load_kinds(config, config_dir)[1]]


def _load_kinds(config: Config, config_dir: Path) -> tuple[list[RuleKind], list[RulesError]]:
    kinds: list[RuleKind] = []
    problems: list[RulesError] = []
    for key, loader in KINDS:
        raw = getattr(config, key)
        if not raw:
            continue
        try:
            kinds.append(loader(raw, key, config_dir))
        except RulesError as exc:
            problems.append(exc)
    return kinds, problems
