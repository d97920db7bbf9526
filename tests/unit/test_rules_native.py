"""The native ``rules:`` kind (stages.receiver.rules.native): what each rule matches, what it does, and
what is refused, naming ``rules[i].key``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stages.common.model import MetricType, Tags
from stages.receiver.rules.kind import Outcome, RulesError
from stages.receiver.rules.native import load

pytestmark = pytest.mark.serverless

C, G, MS, S = int(MetricType.COUNTER), int(MetricType.GAUGE), int(MetricType.TIMER), int(MetricType.SET)


def decide(rules: list[dict[str, Any]], name: str, mtype: int = C, tags: Tags = ()) -> Outcome | None:
    return load(rules, "rules", Path("."), ).decide(name, mtype, tags)


API = {"match": "api.*.*.*.latency", "name": "api.latency",
       "tags": {"host": "$1", "method": "$2", "endpoint": "$3"}}


@pytest.mark.parametrize(("rules", "name", "mtype", "tags", "expected"), [
    # exact, glob within a component and within part of one, regex anchored with captures
    ([{"match": "a.b", "name": "x"}], "a.b", C, (), ("rules[0]", "x", ())),
    ([{"match": "a.b", "name": "x"}], "a.bc", C, (), None),
    ([API], "api.host-7.GET.users.latency", MS, (),
     ("rules[0]", "api.latency", ("endpoint", "users", "host", "host-7", "method", "GET"))),
    ([API], "api.host-7.GET.users.v2.latency", MS, (), None),  # * stays within one component
    ([{"match": "test.*_start", "name": "test.start", "tags": {"job": "$1"}}], "test.backup_start", C, (),
     ("rules[0]", "test.start", ("job", "backup"))),
    ([{"match": "test.*_start", "name": "x"}], "test.a.b_start", C, (), None),
    ([{"match": r"svc\.(\w+)\.(?P<op>\w+)", "match_type": "regex", "name": "svc.${op}", "tags": {"svc": "$1"}}],
     "svc.auth.login", C, (), ("rules[0]", "svc.login", ("svc", "auth"))),
    ([{"match": r"svc\.\w+", "match_type": "regex", "name": "x"}], "xsvc.auth.y", C, (), None),  # anchored
    ([{"match": "a*b", "match_type": "exact", "name": "x"}], "a*b", C, (), ("rules[0]", "x", ())),
    ([{"match": "a*b", "match_type": "exact", "name": "x"}], "aab", C, (), None),
    # the type: a gauge change is filed as a gauge
    ([{"match": "q", "match_metric_type": "gauge", "name": "x"}], "q", G, (), ("rules[0]", "x", ())),
    ([{"match": "q", "match_metric_type": ["timer", "set"], "name": "x"}], "q", C, (), None),
    ([{"match": "q", "match_metric_type": ["timer", "set"], "name": "x"}], "q", S, (), ("rules[0]", "x", ())),
    # tags: present, value glob
    ([{"match": "q", "match_tags": {"env": "*"}, "name": "x"}], "q", C, ("env", ""), ("rules[0]", "x", ("env", ""))),
    ([{"match": "q", "match_tags": {"env": "*"}, "name": "x"}], "q", C, ("zone", "a"), None),
    ([{"match": "q", "match_tags": {"env": "prod*"}, "name": "x"}], "q", C, ("env", "prod.eu"),
     ("rules[0]", "x", ("env", "prod.eu"))),
    ([{"match": "q", "match_tags": {"env": "prod*"}, "name": "x"}], "q", C, ("env", "staging"), None),
    # tags: the rule's override the sender's, unless honor_tags; keep_tags, then drop_tags, then the rule's
    ([{"match": "q", "tags": {"env": "rule"}}], "q", C, ("env", "sent"), ("rules[0]", "q", ("env", "rule"))),
    ([{"match": "q", "tags": {"env": "rule", "new": "n"}, "honor_tags": True}], "q", C, ("env", "sent"),
     ("rules[0]", "q", ("env", "sent", "new", "n"))),
    ([{"match": "q", "drop_tags": ["pod*", "ip"]}], "q", C, ("ip", "1", "pod", "a", "pod_uid", "b", "zone", "z"),
     ("rules[0]", "q", ("zone", "z"))),
    ([{"match": "q", "keep_tags": ["env", "h*"]}], "q", C, ("env", "p", "host", "h", "pod", "a"),
     ("rules[0]", "q", ("env", "p", "host", "h"))),
    ([{"match": "q", "keep_tags": ["env"], "tags": {"team": "x"}}], "q", C, ("env", "p", "team", "sent"),
     ("rules[0]", "q", ("env", "p", "team", "x"))),
    ([{"match": "q", "drop_tags": ["*"], "tags": {"a": "1"}}], "q", C, ("b", "2"), ("rules[0]", "q", ("a", "1"))),
    # an empty capture: a name that expands to nothing is kept, a tag that does is not set
    ([{"match": "p.*", "name": "$1", "tags": {"part": "$1"}}], "p.", C, ("part", "old"), ("rules[0]", "p.", ())),
    # drop
    ([{"match": "debug.*", "drop": True}], "debug.x", C, (), ("rules[0]", "debug.x", (), True)),
    # the first that matches decides
    ([{"match": "a.*", "name": "first"}, {"match": "a.b", "name": "second"}], "a.b", C, (),
     ("rules[0]", "first", ())),
    ([{"match": "z", "name": "first"}, {"match": "a.b", "name": "second"}], "a.b", C, (), ("rules[1]", "second", ())),
    # continue: the later rules see the new identity; the last that matched decides
    ([{"match": "a.*", "name": "b.$1", "tags": {"from": "a"}, "continue": True},
      {"match": "b.*", "name": "c", "tags": {"part": "$1"}}], "a.x", C, (),
     ("rules[1]", "c", ("from", "a", "part", "x"))),
    ([{"match": "a.*", "name": "b.$1", "continue": True}, {"match": "nothing", "name": "c"}], "a.x", C, (),
     ("rules[0]", "b.x", (), False, True)),
    ([{"match": "a.*", "name": "b.$1", "continue": True}, {"match": "b.*", "drop": True}], "a.x", C, (),
     ("rules[1]", "b.x", (), True)),
    ([{"match": "a.*", "name": "b.$1", "continue": True}, {"match": "a.*", "name": "never"}], "a.x", C, (),
     ("rules[0]", "b.x", (), False, True)),
    # a rule without actions matches and keeps the metric as it is (and the rules after it out)
    ([{"match": "keep.*"}, {"match": "*.*", "drop": True}], "keep.x", C, ("k", "v"),
     ("rules[0]", "keep.x", ("k", "v"))),
])
def test_what_a_rule_matches_and_does(rules: list[dict[str, Any]], name: str, mtype: int, tags: Tags,
                                      expected: tuple[Any, ...] | None) -> None:
    assert decide(rules, name, mtype, tags) == (Outcome(*expected) if expected is not None else None)


@pytest.mark.parametrize(("rules", "key", "says"), [
    ({"match": "a"}, "rules", "expected a list"),
    (["a"], "rules[0]", "expected a map"),
    ([{"name": "x"}], "rules[0].match", "required key is missing"),
    ([{"match": "a", "nmae": "x"}], "rules[0].nmae", "did you mean 'name'"),
    ([{"match": "a"}, {"match": "b", "continu": True}], "rules[1].continu", "did you mean 'continue'"),
    ([{"match": "a", "match_type": "wildcard"}], "rules[0].match_type", "one of exact, glob, regex"),
    ([{"match": "(", "match_type": "regex"}], "rules[0].match", "not a regex RE2 takes"),
    ([{"match": "(a+)+$", "match_type": "regex", "name": "$2"}], "rules[0].name", "refers to ${2}"),
    ([{"match": "a.*", "name": "$2"}], "rules[0].name", "refers to ${2}"),
    ([{"match": "a.*", "tags": {"k": "${x}"}}], "rules[0].tags.k", "refers to ${x}"),
    ([{"match": "a", "match_metric_type": "meter"}], "rules[0].match_metric_type", "'meter' is no metric type"),
    ([{"match": "a", "drop": True, "name": "b"}], "rules[0].drop", "remove name"),
    ([{"match": "a", "drop": "yes"}], "rules[0].drop", "true or false"),
    ([{"match": "a", "continue": 1}], "rules[0].continue", "true or false"),
    ([{"match": "a", "honor_tags": True}], "rules[0].honor_tags", "the rule sets none"),
    ([{"match": "a", "tags": ["k"]}], "rules[0].tags", "a map"),
    ([{"match": "a", "drop_tags": "pod"}], "rules[0].drop_tags", "a list"),
    ([{"match": "a", "keep_tags": ["ok", ""]}], "rules[0].keep_tags[1]", "must not be empty"),
    ([{"match": "a", "match_tags": {"env": None}}], "rules[0].match_tags.env", "expected a string"),
    ([{"match": "a", "name": "x\x1fy"}], "rules[0].name", "control character"),
    ([{"match": ""}], "rules[0].match", "must not be empty"),
])
def test_a_bad_rule_is_refused_naming_its_key(rules: Any, key: str, says: str) -> None:
    with pytest.raises(RulesError) as refused:
        load(rules, "rules", Path("."))
    assert refused.value.key == key
    assert str(refused.value).startswith(f"{key}: ")
    assert says in str(refused.value)


def test_every_rule_is_named_in_order() -> None:
    assert load([{"match": "a"}, {"match": "b", "drop": True}], "rules", Path(".")).rule_names() == [
        "rules[0]", "rules[1]"]
