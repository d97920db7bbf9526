"""Every kind of rule under its config key, in the order they apply to a metric (see :mod:`.rule_set`).

A kind is one file of this package and one line here: its key (a field of
:class:`stages.common.config.Config` holding the raw value, validated by the kind's loader) and its
loader (:class:`.kind.Loader`). A key left empty in the config gives no rules.
"""

from __future__ import annotations

from . import native
from .kind import Loader

KINDS: tuple[tuple[str, Loader], ...] = (
    (native.KEY, native.load),
)
