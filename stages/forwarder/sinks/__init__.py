"""The sink registry: a sink kind → the sink class. A new sink is a file plus a line here.

Each key under ``forwarders:`` names one sink instance; its ``type`` says its kind, or, when it has
none, the key itself does (the original form: ``kafka:``, ``file:``). Several instances of one kind
are several names (``archive: {type: file, ...}``, ``audit: {type: file, ...}``); everything counted
per sink (its row in ``pystatsd status``, its self-metrics' ``sink`` tag, its buffer and what a
reload hands on) is counted per name.

What a sink must do and may not is :mod:`stages.forwarder.sinks.base`'s; ``tests/unit/test_sink_conformance.py``
holds every sink of this registry to it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from typing import Any

from stages.common.config import Config, ConfigError, Secret, load_section
from stages.forwarder.sinks.base import NamedSink, Sink, SinkConfig
from stages.forwarder.sinks.console import ConsoleConfig, ConsoleSink
from stages.forwarder.sinks.file import FileSink
from stages.forwarder.sinks.graphite import GraphiteSink
from stages.forwarder.sinks.influxdb import InfluxDBSink
from stages.forwarder.sinks.kafka import KafkaSink
from stages.forwarder.sinks.otlp import OtlpSink
from stages.forwarder.sinks.prometheus import PrometheusSink
from stages.forwarder.sinks.prometheus_remote_write import PrometheusRemoteWriteSink

# Typed as the Protocol, so that the type checker holds each class to it; keyed by each sink's own name.
SINKS: dict[str, type[Sink]] = {sink.name: sink for sink in (
    ConsoleSink, FileSink, KafkaSink, InfluxDBSink, GraphiteSink, PrometheusSink, PrometheusRemoteWriteSink,
    OtlpSink)}


#: A sink's name: it is a self-metric's tag value, a thread's and a log line's name, a dotted key of
#: ``check-config``'s messages and a key of the figures file, so it holds no dot, space, slash, quote,
#: colon, comma, ``|``, ``#`` or ``=`` (each one of those formats' separators).
SINK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
SINK_NAME_RULE = "1 to 64 letters, digits, '_' and '-', starting with a letter"


def sink_kind(name: Any, raw: Any) -> str:
    """The kind of sink that ``forwarders.<name>`` configures: its ``type``, else its name when that is a
    kind (the original form); ConfigError naming the key otherwise."""
    path = f"forwarders.{name}"
    if not isinstance(name, str) or not SINK_NAME.fullmatch(name):
        raise ConfigError(f"{path}: a sink's name is {SINK_NAME_RULE}")
    kinds = ", ".join(sorted(SINKS))
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if kind is None:
        if name in SINKS:
            return name
        raise ConfigError(f"{path}: no such sink kind{_did_you_mean(name)}, and no type says which kind this "
                          f"sink is (known kinds: {kinds})")
    if not isinstance(kind, str) or kind not in SINKS:
        hint = _did_you_mean(kind) if isinstance(kind, str) else ""
        raise ConfigError(f"{path}.type: unknown sink kind {kind!r}{hint} (known kinds: {kinds})")
    if name in SINKS and kind != name:
        raise ConfigError(f"{path}.type: a sink named {name} is of that kind, not {kind}; name it otherwise")
    return kind


def _did_you_mean(word: str) -> str:
    close = difflib.get_close_matches(word, list(SINKS), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_sink_config(name: Any, raw: Any) -> SinkConfig:
    """``forwarders.<name>`` validated into its kind's config dataclass."""
    cls = SINKS[sink_kind(name, raw)]
    settings = {key: value for key, value in raw.items() if key != "type"} if isinstance(raw, Mapping) else raw
    return load_section(cls.config_type, settings, f"forwarders.{name}")


def sharing_problems(loaded: dict[str, SinkConfig]) -> list[str]:
    """Sinks that would hold what one sink alone may: a file (two writers would take back each other's
    lines) or an address to serve on (the second could never bind it); each names the other."""
    holders: dict[str, str] = {}
    problems = []
    for name, sink_config in loaded.items():
        sole = sink_config.sole_writer_of()
        served = sink_config.serves_on()
        claims = ([(f"forwarders.{name}.{sole[0]}", f"file {sole[1]}")] if sole else []) + (
            [(f"forwarders.{name}", f"address {served}")] if served else [])
        for key, held in claims:
            if held in holders:
                problems.append(f"{key}: {held} is held by forwarders.{holders[held]} already; one sink alone "
                                "may hold it")
            else:
                holders[held] = name
    return problems


def load_sink_configs(config: Config) -> dict[str, SinkConfig]:
    """Each ``forwarders:`` entry validated into its kind's config dataclass, by its name."""
    loaded = {name: load_sink_config(name, raw) for name, raw in config.forwarders.items()}
    problems = sharing_problems(loaded)
    if problems:
        raise ConfigError(*problems)
    return loaded


def sink_class(sink_config: SinkConfig) -> type[Sink]:
    """The kind of sink a loaded config is for."""
    return next(cls for cls in SINKS.values() if type(sink_config) is cls.config_type)


def sink_sections(config: Config) -> dict[str, dict[str, Any]]:
    """Each sink's kind and validated keys, by its name: what ``check-config --diff`` and ``reload`` compare."""
    return {name: {"type": sink_class(sink_config).name}
            | {field.name: getattr(sink_config, field.name) for field in dataclasses.fields(sink_config)}
            for name, sink_config in load_sink_configs(config).items()}


def config_secrets(config: Config) -> list[str]:
    """Every secret value in the sinks' configs, for masking in logs."""
    secrets = []
    for sink_config in load_sink_configs(config).values():
        for field in dataclasses.fields(sink_config):
            value = getattr(sink_config, field.name)
            if isinstance(value, Secret):
                secrets.append(value.reveal())
            elif isinstance(value, dict):  # a map of secrets: the otlp sink's headers
                secrets += [item.reveal() for item in value.values() if isinstance(item, Secret)]
    return secrets


def build_sinks(config: Config) -> list[NamedSink]:
    """A sink for each ``forwarders:`` entry, by its name, with its buffer bounds; the console alone if none.

    With ``debug_mode`` each remote sink is replaced by a console sink (under the same name) that
    prints what it would have sent, in its format, with secrets masked, as the original daemon's
    debug mode did.
    """
    sinks: list[NamedSink] = []
    for name, sink_config in load_sink_configs(config).items():
        cls = sink_class(sink_config)
        if config.debug_mode and cls.remote:
            # What the remote sink would send, the daemon's own metrics included.
            stand_in = ConsoleConfig(format=sink_config.printed_format, self_metrics=True)
            sinks.append(NamedSink(name, ConsoleSink(stand_in, sink_config.encoder_options(masked=True)), stand_in))
        elif isinstance(sink_config, ConsoleConfig):
            sinks.append(NamedSink(name, ConsoleSink(sink_config, self_metrics_prefix=config.self_metrics_prefix),
                                   sink_config))
        else:
            sinks.append(NamedSink(name, cls(sink_config), sink_config))
    if not sinks:
        default = ConsoleConfig()
        sinks.append(NamedSink(ConsoleSink.name, ConsoleSink(default, self_metrics_prefix=config.self_metrics_prefix),
                               default))
    return sinks
