"""``pystatsd rules test LINE...``: what the config's rules make of each line, and which rule decided.

Each line is parsed by the receiver's own parser (any format it takes, the agent's ``agent.tags``
merged in) and each metric it holds is put to the same :class:`~stages.receiver.rules.rule_set.RuleSet`
the receiver builds; a packed line's values share one identity and are shown once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.common.config import Config
from stages.common.model import OUTPUT_TYPE_NAMES, MetricType, Sample, Tags, tags_dict
from stages.receiver.identity import DROP
from stages.receiver.parsers import payload_parser
from stages.receiver.rules.rule_set import RuleSet, load_rule_set

#: A gauge change is filed, and asked of the rules, as a gauge (as the receiver's windows do).
_KIND = {int(MetricType.GAUGE_DELTA): int(MetricType.GAUGE)}


def tried(config: Config, config_dir: Path, lines: list[str]) -> Iterator[dict[str, Any]]:
    """Per metric of each line (a bad line: once, with its reason), what the rules make of it:
    ``line``, ``outcome`` (``mapped``, ``dropped``, ``unmatched`` or ``bad``), ``rule`` (which decided),
    the ``name``, ``type`` and ``tags`` it is aggregated under, ``scale`` when the rule multiplies its
    values (statsd_exporter's ``scale``) and, for a gauge, ``ttl`` when the rule gives one (seconds idle
    before it is forgotten; statsd_exporter's ``ttl``). RulesError when the rules cannot load."""
    rules = load_rule_set(config, config_dir)
    parse = payload_parser(config.agent.tags)
    for line in lines:
        samples: list[Sample] = []
        bad: dict[str, int] = {}
        parse(line.encode("utf-8", "surrogateescape"), samples, bad)
        for reason in sorted(bad):
            yield {"line": line, "outcome": "bad", "reason": reason}
        seen: set[tuple[str, int, Tags]] = set()
        for name, mtype, _, _, tags in samples:
            kind = _KIND.get(mtype, mtype)
            if (name, kind, tags) not in seen:
                seen.add((name, kind, tags))
                yield {"line": line, **_verdict(rules, name, kind, tags)}


def _verdict(rules: RuleSet | None, name: str, kind: int, tags: Tags) -> dict[str, Any]:
    decision, rule, scale, ttl = rules.verdict(name, kind, tags) if rules is not None else (None,) * 4
    if decision is DROP:
        return {"outcome": "dropped", "rule": rule}
    if decision is not None:
        name, tags = decision
    scaled = {"scale": scale} if scale is not None else {}
    # only a gauge outlives its interval: only a gauge has anything for a ttl to forget
    expiring = {"ttl": ttl} if ttl is not None and kind == int(MetricType.GAUGE) else {}
    return {"outcome": "unmatched" if rule is None else "mapped", "rule": rule, "name": name,
            "type": OUTPUT_TYPE_NAMES[kind], "tags": dict(sorted(tags_dict(tags).items())), **scaled, **expiring}


def as_text(results: list[dict[str, Any]]) -> list[str]:
    """One aligned line per result: ``LINE  ->  what it becomes  (the rule, or no rule)``."""
    width = max((len(result["line"]) for result in results), default=0)
    return [f"{result['line']:<{width}}  ->  {_becomes(result)}" for result in results]


def as_json(results: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(result, ensure_ascii=False) for result in results]


def _becomes(result: dict[str, Any]) -> str:
    if result["outcome"] == "bad":
        return f"bad line ({result['reason']})"
    if result["outcome"] == "dropped":
        return f"dropped  ({result['rule']})"
    tags = ",".join(f"{key}={value}" for key, value in result["tags"].items())
    unchanged = "" if result["outcome"] == "mapped" else "unchanged "
    scaled = f" values * {result['scale']:g}" if "scale" in result else ""
    expiring = f" ttl {result['ttl']:g}s" if "ttl" in result else ""
    what = f"{unchanged}{result['name']} {result['type']}{' ' + tags if tags else ''}{scaled}{expiring}"
    return f"{what}  ({result['rule'] or 'no rule'})"
