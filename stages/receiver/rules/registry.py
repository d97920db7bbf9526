"""Every kind of rule under its config key, in the order they apply to a metric (see :mod:`.rule_set`).

A kind is one file of this package and one line here: its key (a field of
:class:`stages.common.config.Config` holding the raw value, validated by the kind's loader) and its
loader (:class:`.kind.Loader`). A key left empty in the config gives no rules. The native rules come
first: what a user writes for pystatsd itself decides before a file brought from another daemon.
"""

from __future__ import annotations

from . import dogstatsd, native, statsd_exporter
from .kind import Loader

KINDS: tuple[tuple[str, Loader], ...] = (
    (native.KEY, native.load),
    ("mapping_config", statsd_exporter.load),
    ("dogstatsd_mapper_profiles", dogstatsd.load),
)
