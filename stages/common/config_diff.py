"""What changes between two configs, key by key, and how each change takes effect.

``pystatsd check-config --diff NEW`` prints it before a reload; the stages apply what a reload can
apply (see the README's "Reload") and name the rest, which waits for a restart of the pipeline.
Secret values never show: a changed secret reads ``(secret changed)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from stages.common.config import Config, Secret

#: Top-level keys a reload cannot apply: every stage would have to agree on them at one instant.
RESTART_KEYS = frozenset({"flush_interval", "run_dir", "health_address", "queues"})
ON_RELOAD = "on reload"
AT_RESTART = "at the next pystatsd run"


class Change(NamedTuple):
    key: str
    old: str
    new: str
    applies: str


def reloadable(running: Config, new: Config) -> tuple[Config, list[Change]]:
    """What a reload applies (``new``, with the keys only a restart applies kept as they run) and the
    changes to those keys, which wait for the next ``pystatsd run``."""
    waiting = [Change(key, _show(getattr(running, key)), _show(getattr(new, key)), AT_RESTART)
               for key in sorted(RESTART_KEYS) if getattr(running, key) != getattr(new, key)]
    return dataclasses.replace(new, **{key: getattr(running, key) for key in RESTART_KEYS}), waiting


def restart_settings(config: Config) -> dict[str, Any]:
    """The keys a reload cannot change as ``config`` has them, ready for JSON (sorted: the same bytes
    every time): what a process restarted in place hands on, :func:`with_restart_settings` reads."""
    return {key: _plain(getattr(config, key)) for key in sorted(RESTART_KEYS)}


def with_restart_settings(config: Config, settings: dict[str, Any]) -> Config:
    """``config`` with the keys a reload cannot change as ``settings`` has them; a key ``settings``
    lacks (a file of an older release) stays as ``config`` has it."""
    values: dict[str, Any] = {}
    for key in RESTART_KEYS & settings.keys():
        current = getattr(config, key)
        values[key] = dataclasses.replace(current, **settings[key]) if _is_section(current) else settings[key]
    return dataclasses.replace(config, **values)


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if _is_section(value) else value


def _is_section(value: Any) -> bool:
    """Whether ``value`` is a nested section of the config (``queues``), not a plain value."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def config_changes(old: Config, new: Config, sinks_of: Callable[[Config], dict[str, Any]]) -> list[Change]:
    """Every dotted key whose value differs, sinks by their validated configs (``sinks_of``: the
    forwarder's sink registry, which the caller has and no shared module imports)."""
    old_sinks, new_sinks = sinks_of(old), sinks_of(new)
    before = dict(_flatten(_without_sinks(old), "")) | _sink_keys(old_sinks, new_sinks)
    after = dict(_flatten(_without_sinks(new), "")) | _sink_keys(new_sinks, old_sinks)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        was, now = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if was != now or type(was) is not type(now):
            top = key.split(".", 1)[0].split("[", 1)[0]
            changes.append(Change(key, _show(was), _show(now), AT_RESTART if top in RESTART_KEYS else ON_RELOAD))
    return changes


_ABSENT = object()
_CONFIGURED = object()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(not set)"
    if value is _CONFIGURED:
        return "(a sink)"
    if isinstance(value, Secret):
        return "(a secret)"
    return repr(value)


def _without_sinks(config: Config) -> Config:
    return dataclasses.replace(config, forwarders={})


def _sink_keys(sinks: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Each sink's keys where the other config has that sink too; a sink only one has is one key."""
    keys: dict[str, Any] = {}
    for sink, sink_config in sinks.items():
        if sink in other:
            keys.update(_flatten(sink_config, f"forwarders.{sink}."))
        else:
            keys[f"forwarders.{sink}"] = _CONFIGURED
    return keys


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            if field.name != "forwarders" or prefix:
                yield from _flatten(getattr(value, field.name), f"{prefix}{field.name}.")
    elif isinstance(value, dict):
        for key, item in sorted(value.items()):
            yield from _flatten(item, f"{prefix}{key}.")
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        # A list of maps (rules): each map's keys by index, so a changed rule shows as the key it changed.
        for index, item in enumerate(value):
            yield from _flatten(item, f"{prefix.rstrip('.')}[{index}].")
    else:
        yield prefix.rstrip("."), value
