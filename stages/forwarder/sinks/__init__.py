"""The sink registry: the key under ``forwarders:`` → the sink class. A new sink is a file plus a line here."""

from __future__ import annotations

import difflib
from typing import Any

from stages.config import Config, ConfigError, load_section
from stages.forwarder.sinks.base import Sink
from stages.forwarder.sinks.console import ConsoleSink
from stages.forwarder.sinks.file import FileSink

SINKS: dict[str, type[Any]] = {
    "console": ConsoleSink,
    "file": FileSink,
}


def build_sinks(config: Config) -> list[Sink]:
    """A sink for each ``forwarders:`` entry, configs validated first; console alone if none.

    With ``debug_mode`` every remote sink is replaced by one console sink, as the original did.
    """
    chosen: list[tuple[str, Any]] = []
    for key, raw in config.forwarders.items():
        cls = SINKS.get(key)
        if cls is None:
            close = difflib.get_close_matches(key, list(SINKS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known sinks: {', '.join(sorted(SINKS))})"
            raise ConfigError(f"forwarders.{key}: unknown sink{hint}")
        chosen.append((key, load_section(cls.config_type, raw, f"forwarders.{key}")))
    if config.debug_mode:
        chosen = [(key, cfg) for key, cfg in chosen if not SINKS[key].remote]
    if not any(key == "console" for key, _ in chosen) and (config.debug_mode or not chosen):
        chosen.append(("console", ConsoleSink.config_type()))
    return [SINKS[key](cfg) for key, cfg in chosen]
