"""The rule set (stages.receiver.rules.rule_set): the kinds of the registry in their order, a carried-on
outcome handed to the next kind, the rule that decided named and tallied; built from the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.common.config import Config
from stages.common.model import MetricType, Tags
from stages.receiver.identity import DROP, Decided
from stages.receiver.rules import registry
from stages.receiver.rules.kind import Outcome, RulesError
from stages.receiver.rules.rule_set import UNMATCHED, RuleSet, Verdict, load_rule_set, rule_problems

pytestmark = pytest.mark.serverless

C = int(MetricType.COUNTER)


class Kind:
    """A kind of one rule: ``outcome(name, tags)`` for the names it matches."""

    def __init__(self, rule: str, matches: str, new_name: str, carry_on: bool = False, drop: bool = False) -> None:
        self.rule, self.matches, self.new_name, self.carry_on, self.drop = rule, matches, new_name, carry_on, drop
        self.asked: list[str] = []

    def decide(self, name: str, mtype: int, tags: Tags, /) -> Outcome | None:
        self.asked.append(name)
        if not name.startswith(self.matches):
            return None
        return Outcome(self.rule, self.new_name, (*tags, "by", self.rule), self.drop, self.carry_on)

    def rule_names(self) -> list[str]:
        return [self.rule]


def test_the_kinds_are_asked_in_order_and_the_first_outcome_ends_the_search() -> None:
    first, second = Kind("one[0]", "a", "x"), Kind("two[0]", "", "y")
    rules = RuleSet([first, second])
    assert rules.verdict("a.b", C, ()) == Verdict(("x", ("by", "one[0]")), "one[0]")
    assert second.asked == []
    assert rules.verdict("b", C, ()) == Verdict(("y", ("by", "two[0]")), "two[0]")
    assert (first.asked, second.asked) == (["a.b", "b"], ["b"])


def test_a_carried_on_outcome_is_what_the_next_kind_sees_and_the_last_that_matched_decides() -> None:
    second = Kind("two[0]", "x", "y")
    rules = RuleSet([Kind("one[0]", "a", "x", carry_on=True), second])
    assert rules.verdict("a", C, ()) == Verdict(("y", ("by", "one[0]", "by", "two[0]")), "two[0]")
    assert second.asked == ["x"]
    assert RuleSet([Kind("one[0]", "a", "x", carry_on=True), Kind("two[0]", "z", "y")]).verdict("a", C, ()) == \
        Verdict(("x", ("by", "one[0]")), "one[0]")
    assert RuleSet([Kind("one[0]", "a", "x", carry_on=True), Kind("two[0]", "x", "y", drop=True)]).verdict(
        "a", C, ()) == Verdict(DROP, "two[0]")


def test_each_answer_names_its_tally_unchanged_series_answer_none() -> None:
    rules = RuleSet([Kind("one[0]", "a", "x"), Kind("two[0]", "d", "", drop=True)])
    assert [tuple(t) for t in rules.tally_names()] == [("unmatched", None), ("mapped", "one[0]"),
                                                       ("dropped", "one[0]"), ("mapped", "two[0]"),
                                                       ("dropped", "two[0]")]
    assert rules("a", C, ()) == Decided(1, ("x", ("by", "one[0]")))
    assert rules("d", C, ()) == Decided(4, DROP)
    assert rules("q", C, ()) == Decided(UNMATCHED, None)
    keep = RuleSet([_native([{"match": "k", "tags": {"t": "v"}}])])
    assert keep("k", C, ("t", "v")) == Decided(1, None)  # matched, nothing changed: the series stays as it is
    assert keep.rule_count == 1


def _native(raw: list[dict[str, object]]) -> object:
    return registry.KINDS[0][1](raw, "rules", Path("."))


def test_the_config_s_rules_are_loaded_by_the_registry_and_none_without_any(tmp_path: Path) -> None:
    assert [key for key, _ in registry.KINDS][0] == "rules"
    assert load_rule_set(Config(), tmp_path) is None
    loaded = load_rule_set(Config(rules=[{"match": "a.*", "name": "b"}]), tmp_path)
    assert loaded is not None and loaded.verdict("a.x", C, ()) == Verdict(("b", ()), "rules[0]")
    bad = Config(rules=[{"match": "a"}, {"match": "b", "tag": {}}])
    with pytest.raises(RulesError, match=r"^rules\[1\]\.tag: unknown key \(did you mean 'tags'\?\)"):
        load_rule_set(bad, tmp_path)
    assert rule_problems(bad, tmp_path) == ["rules[1].tag: unknown key (did you mean 'tags'?)"]
    assert rule_problems(Config(rules=[{"match": "a"}]), tmp_path) == []


def test_the_three_kinds_apply_in_the_registry_s_order_a_native_continue_handing_on_to_the_mapping_file(
        tmp_path: Path) -> None:
    assert [key for key, _ in registry.KINDS] == ["rules", "mapping_config", "dogstatsd_mapper_profiles"]
    (tmp_path / "mapping.yml").write_text('mappings:\n- match: svc.*.calls\n  name: svc_calls\n  labels: {svc: "$1"}\n'
                                          '- match: junk.*\n  action: drop\n  name: x\n')
    profiles = [{"name": "p", "prefix": "dd.", "mappings": [{"match": "dd.*.hits", "name": "dd.hits",
                                                              "tags": {"site": "$1"}}]}]
    config = Config(rules=[{"match": "old.*.*", "name": "svc.$1.$2", "continue": True}, {"match": "dd.x.hits"}],
                    mapping_config="mapping.yml", dogstatsd_mapper_profiles=profiles)
    rules = load_rule_set(config, tmp_path)
    assert rules is not None and rules.rule_count == 5
    assert rules.verdict("old.api.calls", C, ()) == Verdict(("svc_calls", ("svc", "api")), "mapping_config[0]")
    assert rules.verdict("junk.a", C, ()) == Verdict(DROP, "mapping_config[1]")
    assert rules.verdict("dd.eu.hits", C, ()) == Verdict(("dd.hits", ("site", "eu")),
                                                         "dogstatsd_mapper_profiles[0].mappings[0]")
    assert rules.verdict("dd.x.hits", C, ()) == Verdict(None, "rules[1]")  # the native rule decided first
    assert rules.verdict("none", C, ()) == Verdict(None, None)
    (tmp_path / "bad.yml").write_text("mappings:\n- match: a.b\n  nmae: x\n")
    assert rule_problems(Config(rules=[{"match": "a", "drop": 1}], mapping_config="bad.yml",
                                dogstatsd_mapper_profiles=[{"x": 1}]), tmp_path) == [
        "rules[0].drop: expected true or false, got 1",
        f"mapping_config: {tmp_path / 'bad.yml'}: mappings[0].nmae: unknown key (statsd_exporter 0.31 refuses it too)",
        "dogstatsd_mapper_profiles[0].x: unknown key (known keys: name, prefix, mappings)",
    ]
