"""DogStatsD's ``dogstatsd_mapper_profiles``, read as the Datadog agent's mapper reads them from ``datadog.yaml``.

Profiles are tried in order; the first whose ``prefix`` the name starts with (or whose prefix is
``*``) is the only one searched, even when none of its mappings matches. A mapping's ``match`` is a
``wildcard`` (the default: ``*`` is any run of characters but ``.``, so it may be part of a component,
``test.*_start``; only letters, digits, ``-``, ``_``, ``.`` and ``*`` are allowed, never ``**``) or a
``regex``, both tried as the agent tries them: ``^`` + pattern + ``$``, searched with Go's syntax
(RE2, :mod:`.regex`). Its ``name`` and each value of its ``tags`` may hold ``$n`` / ``${n}``.

The agent appends the mapped tags to the sender's; a tag set here holds one value per key, so a
mapped tag overrides the sender's tag of that key (as a repeated key's last value wins everywhere
else). The agent's per-mapper cache is the seam's (:mod:`stages.receiver.identity`). Where the
agent refuses a profile this refuses it too, with the agent's words and the key path named, and a
little more: an unknown key (the agent ignores it, so a typo maps nothing) and what no tag set here
could carry (a non-string value, a control character, a tag key that is empty).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.common.log_throttle import LogThrottle
from stages.common.model import Tags, tag_tuple, tags_dict
from stages.receiver.parsers.base import CONTROL_CHARS

from .kind import Outcome, RulesError
from .regex import compile_regex, expand

log = logging.getLogger(__name__)

#: The characters the agent allows in a wildcard match (its ``^[a-zA-Z0-9\-_*.]+$``).
WILDCARD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*.")
MATCH_TYPES = ("wildcard", "regex")
PROFILE_KEYS = ("name", "prefix", "mappings")
MAPPING_KEYS = ("match", "match_type", "name", "tags")


@dataclasses.dataclass(frozen=True, slots=True)
class MetricMapping:
    """One mapping: ``rule`` its key path, ``regex`` its compiled match, ``name`` and ``tags`` its templates."""

    rule: str
    regex: Any
    name: str
    tags: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class MappingProfile:
    prefix: str
    mappings: tuple[MetricMapping, ...]

    def takes(self, name: str) -> bool:
        return self.prefix == "*" or name.startswith(self.prefix)


class DogStatsDMapper:
    """The loaded profiles, answering :meth:`decide` as the agent's ``MetricMapper.Map`` would."""

    def __init__(self, profiles: tuple[MappingProfile, ...]) -> None:
        self.profiles = profiles
        self._empty_names = LogThrottle()

    def decide(self, name: str, mtype: int, tags: Tags, /) -> Outcome | None:
        for profile in self.profiles:
            if profile.takes(name):
                return self._first_match(profile, name, tags)
        return None

    def _first_match(self, profile: MappingProfile, name: str, tags: Tags) -> Outcome | None:
        for mapping in profile.mappings:
            match = mapping.regex.search(name)
            if match is None:
                continue
            new_name = expand(mapping.name, match)
            if not new_name:
                # The agent would send a metric without a name; here it keeps its own.
                if self._empty_names.ready():
                    log.warning("%s: the name %r expands to nothing for %r, which keeps its name",
                                mapping.rule, mapping.name, name)
                return None
            merged = tags_dict(tags)
            for key, template in mapping.tags:
                # The agent's tag is the text key:value, read back (as every DogStatsD tag) up to its first ':'.
                tag_key, _, tag_value = f"{key}:{expand(template, match)}".partition(":")
                merged[tag_key] = tag_value
            return Outcome(mapping.rule, new_name, tag_tuple(merged, {}))
        return None

    def rule_names(self) -> list[str]:
        return [mapping.rule for profile in self.profiles for mapping in profile.mappings]


def load(raw: Any, key: str, config_dir: Path, /) -> DogStatsDMapper:
    """The profiles of ``raw`` (the value of ``key``, a list as in ``datadog.yaml``); ``config_dir`` is unused."""
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise RulesError(key, f"expected a list of profiles, got {type(raw).__name__}")
    return DogStatsDMapper(tuple(_profile(item, f"{key}[{i}]", i) for i, item in enumerate(raw)))


def _profile(raw: Any, key: str, index: int) -> MappingProfile:
    _check_keys(raw, key, PROFILE_KEYS)
    name = _text(raw.get("name"), f"{key}.name")
    if not name:
        raise RulesError(f"{key}.name", f"missing profile name {index}")
    prefix = _text(raw.get("prefix"), f"{key}.prefix")
    if not prefix:
        raise RulesError(f"{key}.prefix", f"missing prefix for profile: {name}")
    mappings = raw.get("mappings")
    if mappings is None:
        mappings = []
    if not isinstance(mappings, list):
        raise RulesError(f"{key}.mappings", f"expected a list of mappings, got {type(mappings).__name__}")
    return MappingProfile(prefix, tuple(_mapping(item, f"{key}.mappings[{j}]") for j, item in enumerate(mappings)))


def _mapping(raw: Any, key: str) -> MetricMapping:
    _check_keys(raw, key, MAPPING_KEYS)
    match_type = _text(raw.get("match_type"), f"{key}.match_type") or "wildcard"
    if match_type not in MATCH_TYPES:
        raise RulesError(f"{key}.match_type",
                         f"invalid match type {match_type!r}, must be `wildcard` or `regex`")
    name = _template(raw.get("name"), f"{key}.name")
    if not name:
        raise RulesError(f"{key}.name", "name is required")
    match = _text(raw.get("match"), f"{key}.match")
    if not match:
        raise RulesError(f"{key}.match", "match is required")
    pattern = _wildcard_regex(match, f"{key}.match") if match_type == "wildcard" else match
    regex = compile_regex(f"^{pattern}$", f"{key}.match", anchored=False)
    return MetricMapping(key, regex, name, _tags(raw.get("tags"), f"{key}.tags"))


def _wildcard_regex(match: str, key: str) -> str:
    """The regex the agent makes of a wildcard match: ``.`` literal, ``*`` any run of non-dots."""
    if not set(match) <= WILDCARD_CHARS:
        raise RulesError(key, f"invalid wildcard match pattern `{match}`, it does not match allowed match regex "
                              "`^[a-zA-Z0-9\\-_*.]+$`")
    if "**" in match:
        raise RulesError(key, f"invalid wildcard match pattern `{match}`, it should not contain consecutive `*`")
    return match.replace(".", "\\.").replace("*", "([^.]*)")


def _tags(raw: Any, key: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise RulesError(key, f"expected a map of tag names to values, got {type(raw).__name__}")
    tags = []
    for tag_key, template in raw.items():
        if not isinstance(tag_key, str):
            raise RulesError(key, f"tag name {tag_key!r} must be a string (quote it)")
        if not tag_key.partition(":")[0]:
            raise RulesError(f"{key}.{tag_key}", "a tag name must not be empty (nor start with ':')")
        _template(tag_key, key)
        tags.append((tag_key, _template(template, f"{key}.{tag_key}")))
    return tuple(tags)


def _template(raw: Any, key: str) -> str:
    text = _text(raw, key)
    if CONTROL_CHARS.search(text):
        raise RulesError(key, f"{text!r} holds a control character, which no metric name or tag may")
    return text


def _text(raw: Any, key: str) -> str:
    """A string value; a key left empty (``name:``) is the empty string, as the agent reads it."""
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise RulesError(key, f"expected a string, got {raw!r} (quote it)")
    return raw


def _check_keys(raw: Any, key: str, known: tuple[str, ...]) -> None:
    if not isinstance(raw, Mapping):
        raise RulesError(key, f"expected a map with the keys {', '.join(known)}, got {type(raw).__name__}")
    for name in raw:
        if name not in known:
            raise RulesError(f"{key}.{name}", f"unknown key (known keys: {', '.join(known)})")
