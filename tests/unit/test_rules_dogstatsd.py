"""DogStatsD's ``dogstatsd_mapper_profiles`` map as the Datadog agent's mapper does: its own test cases.

``AGENT_MAPPINGS`` and ``AGENT_REFUSALS`` are the tables of the agent's ``comp/dogstatsd/mapper/mapper_test.go``
(``TestMappings``, ``TestMappingErrors``), each case under its name there, config, packets and expected
results as written there; ``TAG_ALREADY_PRESENT`` is from its ``comp/dogstatsd/server/server_test.go``
(``TestMappingCases``: how mapped tags join the sender's). They are read from
tests/data/dogstatsd_mapper/agent_cases.yaml. The rest are what this port adds or decides.
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

#: The agent's own cases (tests/data/dogstatsd_mapper/agent_cases.yaml says where each comes from).
AGENT = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "dogstatsd_mapper" / "agent_cases.yaml")
                       .read_text())
AGENT_MAPPINGS: list[dict[str, Any]] = AGENT["mappings"]
AGENT_REFUSALS: list[dict[str, Any]] = AGENT["refusals"]
PROFILES_OK: str = AGENT["profiles_ok"]
TAG_ALREADY_PRESENT: str = AGENT["tag_already_present"]


def mapper_of(config: str) -> DogStatsDMapper:
    return load(yaml.safe_load(config)[KEY], KEY, Path("."))


def as_agent_writes_it(outcome: Outcome) -> tuple[str, list[str]]:
    """The outcome as the agent's MapResult: the name and sorted ``key:value`` tags."""
    return outcome.name, sorted(f"{k}:{v}" for k, v in zip(outcome.tags[0::2], outcome.tags[1::2], strict=True))


def test_every_case_of_the_agent_s_tables_is_here() -> None:
    assert (len(AGENT_MAPPINGS), len(AGENT_REFUSALS)) == (13, 9)


@pytest.mark.parametrize("case", AGENT_MAPPINGS, ids=[case["name"] for case in AGENT_MAPPINGS])
def test_the_agent_s_mapping_cases(case: dict[str, Any]) -> None:
    mapper = mapper_of(case["config"])
    results = []
    for packet in case["packets"]:
        outcome = mapper.decide(packet, MetricType.GAUGE, ())
        if outcome is not None:
            assert not outcome.drop and not outcome.carry_on
            results.append(as_agent_writes_it(outcome))
    assert results == [(name, sorted(tags)) for name, tags in case["expected"]]


@pytest.mark.parametrize("case", AGENT_REFUSALS, ids=[case["name"] for case in AGENT_REFUSALS])
def test_the_agent_s_refusals_name_the_key(case: dict[str, Any]) -> None:
    with pytest.raises(RulesError) as refused:
        mapper_of(case["config"])
    key = case["key"]
    assert refused.value.key == key
    assert str(refused.value).startswith(f"{key}: ")
    assert case["agent_says"] in str(refused.value)


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
    mapper = mapper_of(AGENT_MAPPINGS[0]["config"])
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

    key, tally, scale, _ = answer(rules, "test.job.duration.t.n", MetricType.TIMER, ("host", "h1"))
    assert isinstance(key, str) and tally == NO_TALLY and scale is None
    assert split_series_key(key) == ("test.job.duration", ("host", "h1", "job_name", "n", "job_type", "t"))
    assert answer(rules, "other.name", MetricType.TIMER, ()) == (None, NO_TALLY, None, None)


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
