"""The sink registry: the key under ``forwarders:`` → the sink class. A new sink is a file plus a line here.

What a sink must do and may not is :mod:`stages.forwarder.sinks.base`'s; ``tests/unit/test_sink_conformance.py``
holds every sink of this registry to it.
"""

from __future__ import annotations

import dataclasses
import difflib

from stages.common.config import Config, ConfigError, Secret, load_section
from stages.forwarder.sinks.base import BufferConfig, Sink, SinkConfig
from stages.forwarder.sinks.console import ConsoleConfig, ConsoleSink
from stages.forwarder.sinks.file import FileSink
from stages.forwarder.sinks.graphite import GraphiteSink
from stages.forwarder.sinks.influxdb import InfluxDBSink
from stages.forwarder.sinks.kafka import KafkaSink
from stages.forwarder.sinks.prometheus import PrometheusSink
from stages.forwarder.sinks.prometheus_remote_write import PrometheusRemoteWriteSink

# Typed as the Protocol, so that the type checker holds each class to it; keyed by each sink's own name.
SINKS: dict[str, type[Sink]] = {sink.name: sink for sink in (
    ConsoleSink, FileSink, KafkaSink, InfluxDBSink, GraphiteSink, PrometheusSink, PrometheusRemoteWriteSink)}


def load_sink_configs(config: Config) -> dict[str, SinkConfig]:
    """Each ``forwarders:`` entry validated into its sink's config dataclass."""
    loaded = {}
    for key, raw in config.forwarders.items():
        cls = SINKS.get(key)
        if cls is None:
            close = difflib.get_close_matches(key, list(SINKS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known sinks: {', '.join(sorted(SINKS))})"
            raise ConfigError(f"forwarders.{key}: unknown sink{hint}")
        loaded[key] = load_section(cls.config_type, raw, f"forwarders.{key}")
    return loaded


def config_secrets(config: Config) -> list[str]:
    """Every secret value in the sinks' configs, for masking in logs."""
    secrets = []
    for sink_config in load_sink_configs(config).values():
        for field in dataclasses.fields(sink_config):
            value = getattr(sink_config, field.name)
            if isinstance(value, Secret):
                secrets.append(value.reveal())
    return secrets


def build_sinks(config: Config) -> list[tuple[Sink, BufferConfig]]:
    """A sink for each ``forwarders:`` entry, with its buffer bounds; the console alone if none.

    With ``debug_mode`` each remote sink is replaced by a console sink that prints what it would
    have sent, in its format, with secrets masked, as the original daemon's debug mode did.
    """
    sinks: list[tuple[Sink, BufferConfig]] = []
    for key, sink_config in load_sink_configs(config).items():
        cls = SINKS[key]
        if config.debug_mode and cls.remote:
            # What the remote sink would send, the daemon's own metrics included.
            stand_in = ConsoleConfig(format=sink_config.printed_format, self_metrics=True)
            sinks.append((ConsoleSink(stand_in, sink_config.encoder_options(masked=True)), stand_in))
        elif isinstance(sink_config, ConsoleConfig):
            sinks.append((ConsoleSink(sink_config, self_metrics_prefix=config.self_metrics_prefix), sink_config))
        else:
            sinks.append((cls(sink_config), sink_config))
    if not sinks:
        sinks.append((ConsoleSink(ConsoleConfig(), self_metrics_prefix=config.self_metrics_prefix), ConsoleConfig()))
    return sinks
