"""What every kind of rule is: one file per kind (native ``rules:``, statsd_exporter's ``mapping_config``,
DogStatsD's ``dogstatsd_mapper_profiles``), each registered once in :mod:`.registry`.

A kind is loaded from the raw config value of its key (:func:`Loader`), refusing what is wrong with
a :class:`RulesError` that names the key path (``rules[3].match``, ``mapping_config: /etc/x.yml:
mappings[2].name``), and then answers :meth:`RuleKind.decide` for one series at a time. The receiver
asks only on a series it has not seen (:mod:`stages.receiver.identity` caches the answers), so a kind
may be slow per call but must be pure: the same identity, the same outcome.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from stages.common.model import Tags


class RulesError(ValueError):
    """A rule that cannot be loaded; ``key`` is the dotted path of what is wrong, named in every message."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one rule decided for a series.

    ``rule`` names the rule for logs, ``pystatsd rules test`` and the per-rule self-metrics
    (``rules[3]``, ``mapping_config[12]``, ``dogstatsd_mapper_profiles[0].mappings[2]``); ``drop``
    drops the metric; otherwise ``name`` and ``tags`` (flat ``(k1, v1, ...)``, the whole new tag set)
    are the series' new identity; ``carry_on`` (a native rule's ``continue``) hands that identity to
    the rules after this one instead of ending the search; ``scale`` (statsd_exporter's ``scale``; no
    other kind sets it) multiplies every value of the series' samples, None leaves them as sent; ``ttl``
    (statsd_exporter's ``ttl``, seconds; no other kind sets it) is how long a gauge of the series lives
    without an update (:mod:`stages.receiver.identity`), None: ``expire_after_intervals``."""

    rule: str
    name: str
    tags: Tags
    drop: bool = False
    carry_on: bool = False
    scale: float | None = None
    ttl: float | None = None


class RuleKind(Protocol):
    def decide(self, name: str, mtype: int, tags: Tags, /) -> Outcome | None:
        """The outcome of the first of this kind's rules that matches the series, None if none does."""

    def rule_names(self) -> list[str]:
        """Every rule's name as :attr:`Outcome.rule` gives it, in order (the self-metrics declare them)."""


class Loader(Protocol):
    def __call__(self, raw: Any, key: str, config_dir: Path, /) -> RuleKind:
        """The kind built from its config value ``raw`` under ``key`` (relative paths from ``config_dir``)."""
