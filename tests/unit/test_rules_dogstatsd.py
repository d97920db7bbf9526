"""DogStatsD's ``dogstatsd_mapper_profiles`` map as the Datadog agent's mapper does: its own test cases.

``AGENT_MAPPINGS`` and ``AGENT_REFUSALS`` are the tables of the agent's ``comp/dogstatsd/mapper/mapper_test.go``
(``TestMappings``, ``TestMappingErrors``), each case under its name there, config, packets and expected
results as written there; ``TAG_ALREADY_PRESENT`` is from its ``comp/dogstatsd/server/server_test.go``
(``TestMappingCases``: how mapped tags join the sender's). The rest are what this port adds or decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.common.config import Config, load_config
from stages.common.model import MetricType, Tags, split_series_key
from stages.receiver.identity import DROP, NO_TALLY, Decision, answer
from stages.receiver.rules.dogstatsd import DogStatsDMapper, load
from stages.receiver.rules.kind import Loader, Outcome, RuleKind, RulesError

pytestmark = pytest.mark.serverless

KEY = "dogstatsd_mapper_profiles"

# (name, config, packets, expected: one (name, tags) per packet that maps, in order; tags as the agent writes them)
AGENT_MAPPINGS: list[tuple[str, str, list[str], list[tuple[str, list[str]]]]] = [
    ("Simple OK case", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test.job.duration.*.*"
        name: "test.job.duration"
        tags:
          job_type: "$1"
          job_name: "$2"
      - match: "test.job.size.*.*"
        name: "test.job.size"
        tags:
          foo: "$1"
          bar: "$2"
""", [
        "test.job.duration.my_job_type.my_job_name",
        "test.job.size.my_job_type.my_job_name",
        "test.job.size.not_match",
    ], [
        ("test.job.duration", ["job_type:my_job_type", "job_name:my_job_name"]),
        ("test.job.size", ["foo:my_job_type", "bar:my_job_name"]),
    ]),
    ("Not/Partially mapped are accepted", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test.job.duration.*.*"
        name: "test.job.duration"
        tags:
          job_type: "$1"
      - match: "test.task.duration.*.*"
        name: "test.task.duration"
""", [
        "test.job.duration.my_job_type.my_job_name",
        "test.task.duration.my_job_type.my_job_name",
    ], [
        ("test.job.duration", ["job_type:my_job_type"]),
        ("test.task.duration", []),
    ]),
    ("Use regex expansion alternative syntax", """
dogstatsd_mapper_profiles:
 - name: test
   prefix: 'test.'
   mappings:
    - match: "test.job.duration.*.*"
      name: "test.job.duration"
      tags:
        job_type: "${1}_x"
        job_name: "${2}_y"
""", [
        "test.job.duration.my_job_type.my_job_name",
    ], [
        ("test.job.duration", ["job_type:my_job_type_x", "job_name:my_job_name_y"]),
    ]),
    ("Expand name", """
dogstatsd_mapper_profiles:
 - name: test
   prefix: 'test.'
   mappings:
    - match: "test.job.duration.*.*"
      name: "test.hello.$2.$1"
      tags:
        job_type: "$1"
        job_name: "$2"
""", [
        "test.job.duration.my_job_type.my_job_name",
    ], [
        ("test.hello.my_job_name.my_job_type", ["job_type:my_job_type", "job_name:my_job_name"]),
    ]),
    ("Match before underscore", """
dogstatsd_mapper_profiles:
 - name: test
   prefix: 'test.'
   mappings:
    - match: "test.*_start"
      name: "test.start"
      tags:
        job: "$1"
""", [
        "test.my_job_start",
    ], [
        ("test.start", ["job:my_job"]),
    ]),
    ("No tags", """
dogstatsd_mapper_profiles:
 - name: test
   prefix: 'test.'
   mappings:
    - match: "test.my-worker.start"
      name: "test.worker.start"
    - match: "test.my-worker.stop.*"
      name: "test.worker.stop"
""", [
        "test.my-worker.start",
        "test.my-worker.stop.worker-name",
    ], [
        ("test.worker.start", []),
        ("test.worker.stop", []),
    ]),
    ("All allowed characters", """
dogstatsd_mapper_profiles:
 - name: test
   prefix: 'test.'
   mappings:
    - match: "test.abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ-01234567.*"
      name: "test.alphabet"
""", [
        "test.abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ-01234567.123",
    ], [
        ("test.alphabet", []),
    ]),
    ("Regex match type", """
dogstatsd_mapper_profiles:
 - name: test
   prefix: 'test.'
   mappings:
    - match: "test\\\\.job\\\\.duration\\\\.(.*)"
      match_type: regex
      name: "test.job.duration"
      tags:
        job_name: "$1"
    - match: 'test\\.task\\.duration\\.(.*)' # no need to escape using single quote
      match_type: regex
      name: "test.task.duration"
      tags:
        task_name: "$1"
""", [
        "test.job.duration.my.funky.job$name-abc/123",
        "test.task.duration.MY_task_name",
    ], [
        ("test.job.duration", ["job_name:my.funky.job$name-abc/123"]),
        ("test.task.duration", ["task_name:MY_task_name"]),
    ]),
    ("Complex Regex match type", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test\\\\.job\\\\.([a-z][0-9]-\\\\w+)\\\\.(.*)"
        match_type: regex
        name: "test.job"
        tags:
          job_type: "$1"
          job_name: "$2"
""", [
        "test.job.a5-foo.bar",
        "test.job.foo.bar-not-match",
    ], [
        ("test.job", ["job_type:a5-foo", "job_name:bar"]),
    ]),
    ("Profile and prefix", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'foo.'
    mappings:
      - match: "foo.duration.*"
        name: "foo.duration"
        tags:
          name: "$1"
  - name: test
    prefix: 'bar.'
    mappings:
      - match: "bar.count.*"
        name: "bar.count"
        tags:
          name: "$1"
      - match: "foo.duration2.*"
        name: "foo.duration2"
        tags:
          name: "$1"
""", [
        "foo.duration.foo_name1",
        "foo.duration2.foo_name1",  # should not match, metric in wrong group.
        "bar.count.bar_name1",
        "z.not.mapped",
    ], [
        ("foo.duration", ["name:foo_name1"]),
        ("bar.count", ["name:bar_name1"]),
    ]),
    ("Wildcard prefix", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: '*'
    mappings:
      - match: "foo.duration.*"
        name: "foo.duration"
        tags:
          name: "$1"
""", [
        "foo.duration.foo_name1",
    ], [
        ("foo.duration", ["name:foo_name1"]),
    ]),
    ("Wildcard prefix order", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: '*'
    mappings:
      - match: "foo.duration.*"
        name: "foo.duration"
        tags:
          name1: "$1"
  - name: test
    prefix: '*'
    mappings:
      - match: "foo.duration.*"
        name: "foo.duration"
        tags:
          name2: "$1"
""", [
        "foo.duration.foo_name",
    ], [
        ("foo.duration", ["name1:foo_name"]),
    ]),
    ("Multiple profiles order", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'foo.'
    mappings:
      - match: "foo.*.duration.*"
        name: "foo.bar1.duration"
        tags:
          bar: "$1"
          foo: "$2"
  - name: test
    prefix: 'foo.bar.'
    mappings:
      - match: "foo.bar.duration.*"
        name: "foo.bar2.duration"
        tags:
          foo_bar: "$1"
""", [
        "foo.bar.duration.foo_name",
    ], [
        ("foo.bar1.duration", ["bar:bar", "foo:foo_name"]),
    ]),
]

# (name, config, what the agent's error says, the key named here)
AGENT_REFUSALS: list[tuple[str, str, str, str]] = [
    ("Empty name", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test.job.duration.*.*"
        name: ""
        tags:
          job_type: "$1"
          job_name: "$2"
""", "name is required", "dogstatsd_mapper_profiles[0].mappings[0].name"),
    ("Missing name", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test.job.duration.*.*"
        tags:
          job_type: "$1"
          job_name: "$2"
""", "name is required", "dogstatsd_mapper_profiles[0].mappings[0].name"),
    ("Missing match", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - name: "test.job.duration"
        tags:
          job_type: "$1"
          job_name: "$2"
""", "match is required", "dogstatsd_mapper_profiles[0].mappings[0].match"),
    ("Invalid match regex []", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test.[]duration.*.*"
        name: "test.job.duration"
""", "it does not match allowed match regex", "dogstatsd_mapper_profiles[0].mappings[0].match"),
    ("Invalid match regex ^", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "^test.invalid.duration.*.*"
        name: "test.job.duration"
""", "it does not match allowed match regex", "dogstatsd_mapper_profiles[0].mappings[0].match"),
    ("Consecutive *", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test.invalid.duration.**"
        name: "test.job.duration"
""", "it should not contain consecutive `*`", "dogstatsd_mapper_profiles[0].mappings[0].match"),
    ("Invalid match type", """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test.invalid.duration"
        match_type: invalid
        name: "test.job.duration"
""", "invalid match type", "dogstatsd_mapper_profiles[0].mappings[0].match_type"),
    ("Missing profile name", """
dogstatsd_mapper_profiles:
  - prefix: 'test.'
    mappings:
      - match: "test.invalid.duration"
        match_type: invalid
        name: "test.job.duration"
""", "missing profile name", "dogstatsd_mapper_profiles[0].name"),
    ("Missing profile prefix", """
dogstatsd_mapper_profiles:
  - name: test
    mappings:
      - match: "test.invalid.duration"
        match_type: invalid
        name: "test.job.duration"
""", "missing prefix for profile", "dogstatsd_mapper_profiles[0].prefix"),
]


# The agent's server reads the key in comp/dogstatsd/server's TestDogstatsdMappingProfilesOk with this config.
PROFILES_OK = """
dogstatsd_mapper_profiles:
  - name: "airflow"
    prefix: "airflow."
    mappings:
      - match: 'airflow\\.job\\.duration_sec\\.(.*)'
        name: "airflow.job.duration"
        match_type: "regex"
        tags:
          job_type: "$1"
          job_name: "$2"
      - match: "airflow.job.size.*.*"
        name: "airflow.job.size"
        tags:
          foo: "$1"
          bar: "$2"
  - name: "profile2"
    prefix: "profile2."
    mappings:
      - match: "profile2.hello.*"
        name: "profile2.hello"
        tags:
          foo: "$1"
"""


def mapper_of(config: str) -> DogStatsDMapper:
    return load(yaml.safe_load(config)[KEY], KEY, Path("."))


def as_agent_writes_it(outcome: Outcome) -> tuple[str, list[str]]:
    """The outcome as the agent's MapResult: the name and sorted ``key:value`` tags."""
    return outcome.name, sorted(f"{k}:{v}" for k, v in zip(outcome.tags[0::2], outcome.tags[1::2], strict=True))


@pytest.mark.parametrize(("config", "packets", "expected"), [case[1:] for case in AGENT_MAPPINGS],
                         ids=[case[0] for case in AGENT_MAPPINGS])
def test_the_agent_s_mapping_cases(config: str, packets: list[str], expected: list[tuple[str, list[str]]]) -> None:
    mapper = mapper_of(config)
    results = []
    for packet in packets:
        outcome = mapper.decide(packet, MetricType.GAUGE, ())
        if outcome is not None:
            assert not outcome.drop and not outcome.carry_on
            results.append(as_agent_writes_it(outcome))
    assert results == [(name, sorted(tags)) for name, tags in expected]


@pytest.mark.parametrize(("config", "agent_says", "key"), [case[1:] for case in AGENT_REFUSALS],
                         ids=[case[0] for case in AGENT_REFUSALS])
def test_the_agent_s_refusals_name_the_key(config: str, agent_says: str, key: str) -> None:
    with pytest.raises(RulesError) as refused:
        mapper_of(config)
    assert refused.value.key == key
    assert str(refused.value).startswith(f"{key}: ")
    assert agent_says in str(refused.value)


def test_the_agent_s_profiles_ok_case_loads_every_mapping_and_expands_a_missing_group_to_nothing() -> None:
    mapper = mapper_of(PROFILES_OK)
    assert mapper.rule_names() == [f"{KEY}[0].mappings[0]", f"{KEY}[0].mappings[1]", f"{KEY}[1].mappings[0]"]
    outcome = mapper.decide("airflow.job.duration_sec.etl", MetricType.TIMER, ())
    assert outcome is not None
    assert as_agent_writes_it(outcome) == ("airflow.job.duration", ["job_name:", "job_type:etl"])
    outcome = mapper.decide("profile2.hello.world", MetricType.COUNTER, ())
    assert outcome is not None and as_agent_writes_it(outcome) == ("profile2.hello", ["foo:world"])


def test_the_agent_s_profiles_error_case_a_profile_that_is_no_map_is_refused() -> None:
    with pytest.raises(RulesError) as refused:
        mapper_of("dogstatsd_mapper_profiles:\n  - abc\n")
    assert refused.value.key == f"{KEY}[0]"


TAG_ALREADY_PRESENT = """
dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test.job.duration.*.*"
        name: "test.job.duration"
        tags:
          job_type: "$1"
          job_name: "$2"
"""


@pytest.mark.parametrize(("sent", "expected"), [
    ((), ["job_type:my_job_type", "job_name:my_job_name"]),
    (("some", "tag"), ["job_type:my_job_type", "job_name:my_job_name", "some:tag"]),
    (("more", "tags", "some", "tag"), ["job_type:my_job_type", "job_name:my_job_name", "some:tag", "more:tags"]),
])
def test_the_agent_s_tag_already_present_case_the_mapped_tags_join_the_sender_s(sent: Tags,
                                                                                 expected: list[str]) -> None:
    outcome = mapper_of(TAG_ALREADY_PRESENT).decide("test.job.duration.my_job_type.my_job_name", MetricType.GAUGE, sent)
    assert outcome is not None
    assert as_agent_writes_it(outcome) == ("test.job.duration", sorted(expected))


def test_a_mapped_tag_overrides_the_sender_s_tag_of_that_key() -> None:
    # The agent would send both job_type tags; one tag set holds one value per key, the last given.
    outcome = mapper_of(TAG_ALREADY_PRESENT).decide("test.job.duration.a.b", MetricType.COUNTER,
                                                    ("job_type", "sent", "zone", "eu"))
    assert outcome is not None
    assert outcome.tags == ("job_name", "b", "job_type", "a", "zone", "eu")


def test_every_metric_type_is_mapped_and_the_rule_is_named_by_its_key_path() -> None:
    mapper = mapper_of(AGENT_MAPPINGS[0][1])
    assert mapper.rule_names() == [f"{KEY}[0].mappings[0]", f"{KEY}[0].mappings[1]"]
    for mtype in MetricType:
        outcome = mapper.decide("test.job.size.a.b", mtype, ())
        assert outcome is not None and outcome.rule == f"{KEY}[0].mappings[1]"


def profiles(*mappings: dict[str, Any], prefix: str = "*") -> list[Any]:
    return [{"name": "p", "prefix": prefix, "mappings": list(mappings)}]


def test_a_regex_is_wrapped_in_anchors_as_the_agent_wraps_it_not_grouped() -> None:
    # The agent compiles "^" + match + "$": an alternation anchors each side apart, as here.
    mapper = load(profiles({"match": "a\\.x|b\\.y", "match_type": "regex", "name": "m"}), KEY, Path("."))
    assert mapper.decide("a.x.more", MetricType.GAUGE, ()) is not None
    assert mapper.decide("more.b.y", MetricType.GAUGE, ()) is not None
    assert mapper.decide("more.a.x", MetricType.GAUGE, ()) is None
    wildcard = load(profiles({"match": "a.*", "name": "m"}), KEY, Path("."))
    assert wildcard.decide("a.b.c", MetricType.GAUGE, ()) is None  # * never spans a dot
    assert wildcard.decide("a.", MetricType.GAUGE, ()) is not None  # ... and may match nothing
    assert wildcard.decide("xa.b", MetricType.GAUGE, ()) is None


def test_a_prefix_is_literal_but_a_lone_star() -> None:
    mapper = load(profiles({"match": "a*.b", "name": "m"}, prefix="a*"), KEY, Path("."))
    assert mapper.decide("ax.b", MetricType.GAUGE, ()) is None  # "ax.b" does not start with "a*"
    assert mapper.decide("a*.b", MetricType.GAUGE, ()) is not None
    assert load(profiles({"match": "a*.b", "name": "m"}, prefix="a"), KEY, Path(".")).decide(
        "ax.b", MetricType.GAUGE, ()) is not None


def test_a_tag_name_with_a_colon_is_cut_where_the_agent_s_tag_text_would_be() -> None:
    mapper = load(profiles({"match": "a.*", "name": "m", "tags": {"k:v": "$1", "bare": ""}}), KEY, Path("."))
    outcome = mapper.decide("a.x", MetricType.GAUGE, ())
    assert outcome is not None and outcome.tags == ("bare", "", "k", "v:x")


def test_a_name_that_expands_to_nothing_keeps_the_metric_s_own(caplog: pytest.LogCaptureFixture) -> None:
    mapper = load(profiles({"match": "a.*", "name": "$1"}), KEY, Path("."))
    assert mapper.decide("a.", MetricType.GAUGE, ()) is None
    assert "expands to nothing" in caplog.text
    assert mapper.decide("a.b", MetricType.GAUGE, ()) == Outcome(f"{KEY}[0].mappings[0]", "b", ())


def test_the_seam_takes_an_outcome_as_the_series_it_names() -> None:
    mapper = mapper_of(TAG_ALREADY_PRESENT)

    def rules(name: str, mtype: int, tags: Tags) -> Decision:
        outcome = mapper.decide(name, mtype, tags)
        if outcome is None:
            return None
        return DROP if outcome.drop else (outcome.name, outcome.tags)

    key, tally = answer(rules, "test.job.duration.t.n", MetricType.TIMER, ("host", "h1"))
    assert isinstance(key, str) and tally == NO_TALLY
    assert split_series_key(key) == ("test.job.duration", ("host", "h1", "job_name", "n", "job_type", "t"))
    assert answer(rules, "other.name", MetricType.TIMER, ()) == (None, NO_TALLY)


@pytest.mark.parametrize(("raw", "key", "says"), [
    ({"x": 1}, KEY, "expected a list of profiles"),
    (["p"], f"{KEY}[0]", "expected a map"),
    ([{"name": "p", "prefix": "a.", "mapping": []}], f"{KEY}[0].mapping", "unknown key"),
    ([{"name": "p", "prefix": "a.", "mappings": {}}], f"{KEY}[0].mappings", "expected a list of mappings"),
    (profiles({"match": "a", "name": "m", "tag": {}}), f"{KEY}[0].mappings[0].tag", "unknown key"),
    (profiles({"match": "a", "name": 7}), f"{KEY}[0].mappings[0].name", "expected a string"),
    ([{"name": "p", "prefix": 1, "mappings": []}], f"{KEY}[0].prefix", "expected a string"),
    (profiles({"match": "a", "name": "m", "tags": ["k"]}), f"{KEY}[0].mappings[0].tags", "expected a map"),
    (profiles({"match": "a", "name": "m", "tags": {"k": 200}}), f"{KEY}[0].mappings[0].tags.k", "expected a string"),
    (profiles({"match": "a", "name": "m", "tags": {":k": "v"}}), f"{KEY}[0].mappings[0].tags.:k", "must not be empty"),
    (profiles({"match": "a", "name": "m\x1fn"}), f"{KEY}[0].mappings[0].name", "control character"),
    (profiles({"match": "a", "name": "m", "tags": {"k": "\x00"}}), f"{KEY}[0].mappings[0].tags.k", "control character"),
    (profiles({"match": "(a", "match_type": "regex", "name": "m"}), f"{KEY}[0].mappings[0].match", "RE2"),
    (profiles({"match": "a.b", "name": "m"}, {"match": "a b", "name": "m"}), f"{KEY}[0].mappings[1].match",
     "it does not match allowed match regex"),
])
def test_what_no_mapping_could_carry_is_refused_naming_the_key(raw: Any, key: str, says: str) -> None:
    with pytest.raises(RulesError) as refused:
        load(raw, KEY, Path("."))
    assert refused.value.key == key
    assert says in str(refused.value)


def test_no_profiles_map_nothing_and_the_config_takes_the_key(tmp_path: Path) -> None:
    loader: Loader = load  # mypy checks that the kind keeps the contract
    kind: RuleKind = loader([], KEY, tmp_path)
    assert kind.rule_names() == []
    assert Config().dogstatsd_mapper_profiles == []
    assert load(None, KEY, tmp_path).rule_names() == []
    assert load([{"name": "p", "prefix": "a."}], KEY, tmp_path).decide("a.b", MetricType.GAUGE, ()) is None
    path = tmp_path / "pystatsd.yaml"
    path.write_text(TAG_ALREADY_PRESENT)
    config = load_config(path)
    mapper = load(config.dogstatsd_mapper_profiles, KEY, tmp_path)
    assert mapper.rule_names() == [f"{KEY}[0].mappings[0]"]
