"""The native ``rules:`` kind: an ordered list of rules, each matching a metric's name (and optionally
its type and tags) and acting on it: a new name, tags added or overridden, tags dropped or kept, the
metric dropped.

A rule (``rules[i]``, its name in logs, ``pystatsd rules test`` and the self-metrics)::

    - match: "api.*.*.*.latency"      # required: the name, as match_type reads it
      match_type: glob                # exact | glob | regex; default glob if match has a *, else exact
      match_metric_type: timer        # one type or a list: counter, gauge (a change is a gauge too),
                                      #   timer, histogram, distribution, set, trace
      match_tags: {env: "prod*"}      # each key present with a value its glob matches ("*": present)
      name: "api.latency"             # the new name; $1, ${1}, ${name} from the match
      tags: {host: "$1", method: "$2", endpoint: "$3"}   # added, or overriding the sender's
      honor_tags: false               # true: a tag the sender set wins over the rule's
      drop_tags: ["pod*"]             # the sender's tags whose key a glob matches, removed
      keep_tags: ["env", "host"]      # only the sender's tags whose key a glob matches, kept
      drop: false                     # true: the metric is dropped (and counted); no other action then
      continue: false                 # true: the rules after this one see the new identity too

Globs: in ``match`` a ``*`` matches any run of characters without a dot, so within one dot-separated
component (``api.*.latency``), or part of one (``test.*_start``); each ``*`` is a capture, ``$1`` the
first. In a tag value (``match_tags``) and a tag key (``drop_tags``, ``keep_tags``) ``*`` matches any
run of characters. ``regex`` is RE2 (Go's syntax, :mod:`.regex`), anchored: it matches the whole name.

The first rule that matches decides, unless it says ``continue``: then the search goes on with the
identity it made, and the last rule that matched decides (its name is the one counted). Its actions
apply in this order: ``keep_tags``, then ``drop_tags`` (on the tags the metric came with), then
``tags`` (the rule's own, never removed by its own ``drop_tags``), then ``name``. A name that expands
to nothing leaves the name as it was; a tag whose value expands to nothing is not set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import re2

from stages.common.config import _suggestion
from stages.common.model import MetricType, Tags, tags_dict
from stages.common.name_glob import NAME_STAR, glob_regex, text_problem

from .kind import Outcome, RulesError
from .regex import check_template, compile_regex, expand

#: The key every rule is listed under.
KEY = "rules"

#: Every key a rule may have; any other is refused.
RULE_KEYS = ("match", "match_type", "match_metric_type", "match_tags", "name", "tags", "honor_tags", "drop",
             "drop_tags", "keep_tags", "continue")
MATCH_TYPES = ("exact", "glob", "regex")
#: ``match_metric_type``'s words: the types a window files a series under (a gauge change is a gauge).
METRIC_TYPES = {"counter": int(MetricType.COUNTER), "gauge": int(MetricType.GAUGE), "timer": int(MetricType.TIMER),
                "histogram": int(MetricType.HISTOGRAM), "distribution": int(MetricType.DISTRIBUTION),
                "set": int(MetricType.SET), "trace": int(MetricType.TRACE)}
#: What a ``*`` of a tag glob matches.
TAG_STAR = ".*"


@dataclasses.dataclass(frozen=True, slots=True)
class NativeRule:
    """One loaded rule (see the module's docs); :meth:`apply` is its whole behaviour."""

    rule: str
    pattern: Any
    types: frozenset[int] | None
    match_tags: tuple[tuple[str, Any], ...]
    name: str | None
    tags: tuple[tuple[str, str], ...]
    honor_tags: bool
    keep_tags: Any | None
    drop_tags: Any | None
    drop: bool
    carry_on: bool

    def apply(self, name: str, mtype: int, tags: Tags) -> Outcome | None:
        """What this rule makes of the series, or None when it does not match it."""
        if self.types is not None and mtype not in self.types:
            return None
        match = self.pattern.search(name)
        if match is None:
            return None
        held = tags_dict(tags)
        for key, value in self.match_tags:
            if key not in held or value.search(held[key]) is None:
                return None
        if self.drop:
            return Outcome(self.rule, name, tags, drop=True)
        if self.keep_tags is not None:
            held = {k: v for k, v in held.items() if self.keep_tags.search(k) is not None}
        if self.drop_tags is not None:
            held = {k: v for k, v in held.items() if self.drop_tags.search(k) is None}
        for key, template in self.tags:
            if self.honor_tags and key in held:
                continue
            value = expand(template, match)
            if value:
                held[key] = value
            else:
                held.pop(key, None)
        new_name = expand(self.name, match) if self.name is not None else name
        flat = tuple(text for key in sorted(held) for text in (key, held[key]))
        return Outcome(self.rule, new_name or name, flat, carry_on=self.carry_on)


class NativeRules:
    """The ``rules:`` list, loaded: the seam's kind (:class:`.kind.RuleKind`)."""

    def __init__(self, rules: list[NativeRule]) -> None:
        self.rules = rules

    def decide(self, name: str, mtype: int, tags: Tags, /) -> Outcome | None:
        decided: Outcome | None = None
        for rule in self.rules:
            outcome = rule.apply(name, mtype, tags)
            if outcome is None:
                continue
            if outcome.drop or not outcome.carry_on:
                return outcome
            decided, name, tags = outcome, outcome.name, outcome.tags
        return decided  # carry_on: the last rule that matched said continue, the next kinds go on

    def rule_names(self) -> list[str]:
        return [rule.rule for rule in self.rules]


def load(raw: Any, key: str, config_dir: Path, /) -> NativeRules:
    """The rules of ``raw`` (the list under ``key``); RulesError naming ``key[i].field`` when one is wrong."""
    if not isinstance(raw, list):
        raise RulesError(key, f"expected a list of rules, got {type(raw).__name__}")
    return NativeRules([load_rule(item, f"{key}[{i}]") for i, item in enumerate(raw)])


def load_rule(raw: Any, key: str) -> NativeRule:
    """One rule; RulesError naming ``key.field`` (an unknown field with the likely one it meant)."""
    if not isinstance(raw, dict):
        raise RulesError(key, f"expected a map of keys (match, name, tags...), got {type(raw).__name__}")
    for field in raw:
        if field not in RULE_KEYS:
            raise RulesError(f"{key}.{field}", f"unknown key{_suggestion(str(field), dict.fromkeys(RULE_KEYS))}")
    if "match" not in raw:
        raise RulesError(f"{key}.match", "required key is missing")
    match = _text(raw["match"], f"{key}.match")
    pattern = _name_pattern(match, raw.get("match_type"), key)
    drop = _flag(raw, "drop", key)
    if drop:
        others = [field for field in ("name", "tags", "honor_tags", "drop_tags", "keep_tags", "continue")
                  if field in raw]
        if others:
            raise RulesError(f"{key}.drop", f"a dropped metric takes no other action: remove {', '.join(others)}")
    name = raw.get("name")
    if name is not None:
        name = _text(name, f"{key}.name")
        check_template(name, pattern, f"{key}.name")
    tags = _tag_templates(raw.get("tags"), pattern, f"{key}.tags")
    honor_tags = _flag(raw, "honor_tags", key)
    if honor_tags and not tags:
        raise RulesError(f"{key}.honor_tags", "says whose tag wins over the rule's tags: the rule sets none")
    return NativeRule(
        rule=key, pattern=pattern, types=_metric_types(raw.get("match_metric_type"), f"{key}.match_metric_type"),
        match_tags=_match_tags(raw.get("match_tags"), f"{key}.match_tags"), name=name, tags=tags,
        honor_tags=honor_tags, keep_tags=_key_globs(raw.get("keep_tags"), f"{key}.keep_tags"),
        drop_tags=_key_globs(raw.get("drop_tags"), f"{key}.drop_tags"), drop=drop,
        carry_on=_flag(raw, "continue", key))


def _name_pattern(match: str, match_type: Any, key: str) -> Any:
    if match_type is None:
        match_type = "glob" if "*" in match else "exact"
    if match_type not in MATCH_TYPES:
        raise RulesError(f"{key}.match_type", f"must be one of {', '.join(MATCH_TYPES)}, not {match_type!r}")
    if match_type == "regex":
        return compile_regex(match, f"{key}.match", anchored=True)
    regex = glob_regex(match, NAME_STAR) if match_type == "glob" else re2.escape(match)
    return compile_regex(regex, f"{key}.match", anchored=True)


def _text(value: Any, key: str) -> str:
    """A non-empty name, tag key or template: YAML's numbers read as text, no control characters (a
    series key is built with one)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RulesError(key, f"expected a string, got {type(value).__name__}")
    text = str(value)
    problem = text_problem(text)
    if problem is not None:
        raise RulesError(key, problem)
    return text


def _flag(raw: dict[str, Any], field: str, key: str) -> bool:
    value = raw.get(field, False)
    if not isinstance(value, bool):
        raise RulesError(f"{key}.{field}", f"expected true or false, got {value!r}")
    return value


def _metric_types(raw: Any, key: str) -> frozenset[int] | None:
    if raw is None:
        return None
    words = raw if isinstance(raw, list) else [raw]
    if not words:
        raise RulesError(key, "an empty list matches no metric: name a type, or leave the key out")
    for word in words:
        if word not in METRIC_TYPES:
            raise RulesError(key, f"{word!r} is no metric type (one of {', '.join(METRIC_TYPES)})")
    return frozenset(METRIC_TYPES[word] for word in words)


def _match_tags(raw: Any, key: str) -> tuple[tuple[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise RulesError(key, f"expected a map of tag key to value glob, got {type(raw).__name__}")
    return tuple((_text(tag, key), compile_regex(glob_regex(_text(glob, f"{key}.{tag}"), TAG_STAR), f"{key}.{tag}",
                                                 anchored=True))
                 for tag, glob in raw.items())


def _tag_templates(raw: Any, pattern: Any, key: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise RulesError(key, "expected a map of tag key to value (captures allowed)")
    tags = []
    for tag, template in raw.items():
        value = _text(template, f"{key}.{tag}")
        check_template(value, pattern, f"{key}.{tag}")
        tags.append((_text(tag, key), value))
    return tuple(tags)


def _key_globs(raw: Any, key: str) -> Any | None:
    """One regex matching a tag key any of the globs of ``raw`` matches, None without the key."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise RulesError(key, "expected a list of tag key globs")
    alternatives = "|".join(f"(?:{glob_regex(_text(glob, f'{key}[{i}]'), TAG_STAR)})" for i, glob in enumerate(raw))
    return compile_regex(alternatives, key, anchored=True)
