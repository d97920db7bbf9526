"""The rules' regex engine: Go's syntax through RE2, Go's expansion of ``$n``, bounded time on any name."""

from __future__ import annotations

import pytest

from stages.receiver.rules.kind import RulesError
from stages.receiver.rules.regex import compile_regex, expand

pytestmark = pytest.mark.serverless

MATCH = compile_regex(r"api\.(?P<host>[^.]+)\.(\w+)", "k", anchored=True).match("api.host-7.GET")


@pytest.mark.parametrize(("template", "expanded"), [
    ("$1", "host-7"),
    ("${1}x", "host-7x"),
    ("$1x", ""),  # Go reads the group named "1x"
    ("$host.$2", "host-7.GET"),
    ("$$1", "$1"),
    ("cost-$", "cost-$"),
    ("$-", "$-"),
    ("$9", ""),
    ("${0}", "api.host-7.GET"),
    ("plain", "plain"),
])
def test_expansion_is_go_s(template: str, expanded: str) -> None:
    assert expand(template, MATCH) == expanded


def test_anchored_matches_the_whole_name_and_unanchored_a_part() -> None:
    assert compile_regex("a.b", "k", anchored=True).match("xa.b") is None
    assert compile_regex("a|b.c", "k", anchored=True).match("a") is not None
    assert compile_regex("a.b", "k", anchored=False).search("xa.bx") is not None


@pytest.mark.parametrize("pattern", ["(", "a{2,1}", "(?<=a)b", 7, ""])
def test_a_bad_regex_is_refused_naming_the_key(pattern: object) -> None:
    with pytest.raises(RulesError, match=r"^rules\[3\]\.match: ") as refused:
        compile_regex(pattern, "rules[3].match", anchored=True)
    assert refused.value.key == "rules[3].match"


def test_a_regex_that_backtracks_without_bound_elsewhere_matches_in_linear_time() -> None:
    # (a+)+$ on 40 a's and a b takes Python's re about 2^40 steps; RE2 answers at once. The test fails
    # by its timeout, not by a measured time.
    assert compile_regex("(a+)+", "k", anchored=True).match("a" * 40 + "b") is None
