"""How much of a series a partial carries exactly: the one setting both sides of the fleet tier's edge read.

The forwarder's kafka sink of ``format: partials`` sends the partials, and its section holds these
keys; the edge shard builds the partials and reads the same keys from the same section, here,
without the forwarder's sink registry (no stage imports another).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from stages.common.config import Config, load_section

#: The kafka sink's format that sends partials to the fleet tier instead of aggregates.
PARTIALS = "partials"


@dataclass(frozen=True)
class PartialBounds:
    #: A timer's values sent as they are up to this many, past it a sketch.
    partial_max_values: int = 1000
    #: A set's members sent as they are up to this many, past it a HyperLogLog.
    partial_max_members: int = 1000

    def __post_init__(self) -> None:
        if self.partial_max_values < 1 or self.partial_max_members < 1:
            raise ValueError("partial_max_values and partial_max_members must be at least 1")


def partial_bounds(config: Config) -> PartialBounds | None:
    """The bounds of the config's sink of ``format: partials``; None when it has none."""
    names = [f.name for f in fields(PartialBounds)]
    for key, raw in config.forwarders.items():
        if isinstance(raw, Mapping) and raw.get("format") == PARTIALS:
            return load_section(PartialBounds, {name: raw[name] for name in names if name in raw}, f"forwarders.{key}")
    return None
