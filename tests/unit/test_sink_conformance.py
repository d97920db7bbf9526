"""Every sink of the registry holds to the sink contract (stages/forwarder/sinks/base.py).

Parametrized over ``SINKS``: a sink added there is covered without a line here. Its config must
be a frozen SinkConfig dataclass whose required keys are docs/configuration.md's and load from that
page's own example; its ``format`` must be an encoder format, and ``encoder_options(masked=True)`` (what
``debug_mode`` prints with) must hide every secret the config holds; and writing a flush must
leave the aggregates, which every sink shares, exactly as they were. The write runs against a
local stand-in for the destination, chosen by the config's keys; a sink whose destination has no
stand-in (``SERVER_KEYS``) is written by the test beside that server's (tests/kafka).
"""

from __future__ import annotations

import copy
import dataclasses
import http.server
import re
import socket
import threading
import typing
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.common.config import Config, ConfigError, Secret, load_section
from stages.common.contract import FlushHeader
from stages.forwarder.encoders import ENCODERS
from stages.forwarder.encoders.options import EncoderOptions
from stages.forwarder.sinks import SINKS, build_sinks
from stages.forwarder.sinks.base import Flush, Sink, SinkConfig
from stages.forwarder.sinks.console import ConsoleConfig, ConsoleSink
from tests import config_pages

CONFIG_DOC = config_pages.TEXT
SENTINEL = "CONFORMANCE-SECRET-51c2"
#: Config keys naming a destination that only the real server can stand for → where that test is.
SERVER_KEYS = {"kafka_broker": "tests/kafka/test_kafka_sink.py"}


def keys(config_type: type[SinkConfig]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(config_type) if f.init}


def required_keys(config_type: type[SinkConfig]) -> set[str]:
    return {name for name, f in keys(config_type).items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def readme_examples(name: str) -> list[dict[str, Any]]:
    """Every ``forwarders: <name>:`` section of docs/configuration.md's YAML examples."""
    sections = []
    for block in re.findall(r"^```yaml\n(.*?)^```", CONFIG_DOC, re.MULTILINE | re.DOTALL):
        forwarders = (yaml.safe_load(block) or {}).get("forwarders") or {}
        if isinstance(forwarders.get(name), dict):
            sections.append(forwarders[name])
    return sections


def minimal_raw(name: str) -> dict[str, Any]:
    """The sink's required keys, valued as in docs/configuration.md's first example that has them all: its
    dataclass's, and those its own check asks for as ``<key>: required ...`` (a key required with the
    default of another, as influxdb's ``database`` with its default ``api_version``)."""
    config_type = SINKS[name].config_type
    required, raw = required_keys(config_type), dict[str, Any]()
    while True:
        if required:
            examples = [section for section in readme_examples(name) if required <= set(section)]
            assert examples, (f"docs/configuration.md: no example of forwarders.{name} with its required keys "
                              f"{sorted(required)}")
            raw = {key: examples[0][key] for key in required}
        try:
            load_section(config_type, raw, f"forwarders.{name}")
        except ConfigError as exc:
            asked = set(re.findall(rf"forwarders\.{name}\.(\w+): required", str(exc))) - required
            if asked:
                required |= asked
                continue
        return raw


def minimal_config(name: str, **overrides: Any) -> SinkConfig:
    return load_section(SINKS[name].config_type, {**minimal_raw(name), **overrides}, f"forwarders.{name}")


def every_type_flush() -> Flush:
    """A flush of every aggregate type, with tags a sink might be tempted to clean in place."""
    stamp, tags = 1795597610, {"env": "prod", "route": "/login", "empty": "", "quantile": "q", "name": "n"}
    stats = {"count": 4.0, "sum": 100.0, "min": 10.0, "max": 40.0, "mean": 25.0, "median": 25.0, "stddev": 11.18,
             "p50": 20.0, "p90": 40.0, "p99_9": 40.0}
    common = {"tags": tags, "timestamp": stamp, "interval": 10}
    aggregates = [
        {"name": "api.requests", "type": "counter", **copy.deepcopy(common), "value": 42.0, "rate": 4.2},
        {"name": "room temp", "type": "gauge", **copy.deepcopy(common), "value": 21.5},
        {"name": "users", "type": "set", **copy.deepcopy(common), "value": 3.0},
        {"name": "boot", "type": "trace", **copy.deepcopy(common), "value": 1.0},
        *({"name": f"api.{kind}", "type": kind, **copy.deepcopy(common), "stats": dict(stats)}
          for kind in ("timer", "histogram", "distribution")),
    ]
    header = FlushHeader(shard=0, shards=1, epoch=1, seq=1, interval_start=stamp - 10.0, interval=10.0,
                         n=len(aggregates))
    return Flush(header, aggregates, 0)


def write_leaves_the_aggregates_alone(cls: type[Sink], config: SinkConfig) -> None:
    """Open, write the flush twice (a retry hands the same one again), close: the aggregates stay as they came."""
    flush = every_type_flush()
    before = copy.deepcopy(flush.aggregates)
    sink = cls(config)
    try:
        sink.open()
        sink.write(flush)
        assert flush.aggregates == before
        sink.write(flush)
        assert flush.aggregates == before
    finally:
        sink.close()


def sinks_with_key(wanted: set[str]) -> list[str]:
    return [name for name, cls in SINKS.items() if wanted & set(keys(cls.config_type))]


class _NoContent(http.server.BaseHTTPRequestHandler):
    """Takes every POST as an HTTP API that has nothing to answer does: 204."""

    def do_POST(self) -> None:  # the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def http_stand_in() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoContent)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port: int = reserved.getsockname()[1]
    return port


def local_destination(config_type: type[SinkConfig], stack: ExitStack, tmp_path: Path) -> dict[str, Any]:
    """Keys that point the sink at a stand-in here: a file, a TCP listener, an HTTP server, a free port."""
    given = set(keys(config_type))
    if "path" in given:
        return {"path": str(tmp_path / "out")}
    if "listen_address" in given:
        return {"listen_address": "127.0.0.1", "port": free_port()}
    if "host" in given:
        # Listening is enough: connections wait in the backlog, and a flush fits the kernel's buffers.
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        return {"host": "127.0.0.1", "port": listener.getsockname()[1]}
    if "url" in given:
        return {"url": stack.enter_context(http_stand_in())}
    if "endpoint" in given:  # an HTTP receiver's base URL (otlp)
        return {"endpoint": stack.enter_context(http_stand_in())}
    return {}


# ----- the class and its config ------------------------------------------------------------------


@pytest.mark.parametrize("name", SINKS)
def test_the_sink_declares_what_the_protocol_asks(name: str) -> None:
    cls = SINKS[name]
    assert cls.name == name
    assert isinstance(cls.remote, bool)
    assert issubclass(cls.config_type, SinkConfig)
    assert all(callable(getattr(cls, method, None)) for method in ("open", "write", "close"))


@pytest.mark.parametrize("name", SINKS)
def test_its_config_is_a_frozen_dataclass_with_the_documented_required_keys(name: str) -> None:
    config_type = SINKS[name].config_type
    assert dataclasses.is_dataclass(config_type)
    row = re.search(rf"^\| `{name}` \|(.+)$", CONFIG_DOC, re.MULTILINE)
    assert row, f"sink {name} has no row in the sink table of docs/configuration.md"
    assert set(re.findall(r"`(\w+)` \(required\)", row.group(1))) == required_keys(config_type)
    for key in required_keys(config_type):
        with pytest.raises(ConfigError, match=rf"forwarders\.{name}\.{key}: required key is missing"):
            load_section(config_type, {k: v for k, v in minimal_raw(name).items() if k != key}, f"forwarders.{name}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(minimal_config(name), "buffer_max_aggregates", 1)  # noqa: B010 - what a sink might try


@pytest.mark.parametrize("name", SINKS)
def test_its_format_and_masked_encoder_options_hide_every_secret(name: str,
                                                                 capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    config = minimal_config(name)
    assert config.format in ENCODERS
    hints = typing.get_type_hints(type(config))
    secrets = [key for key in keys(type(config)) if Secret in typing.get_args(hints[key]) or hints[key] is Secret]
    for key in secrets:
        # Planted past __post_init__: whatever combination of keys brought it, a secret held is hidden.
        object.__setattr__(config, key, Secret(SENTINEL))
    options = config.encoder_options(masked=True)
    assert isinstance(options, EncoderOptions)
    shown = [value.reveal() if isinstance(value, Secret) else value for value in vars(options).values()]
    assert SENTINEL not in repr(shown) and SENTINEL not in repr(config)
    # What debug_mode prints in the sink's place: its format, its options, no secret.
    ConsoleSink(ConsoleConfig(format=config.format), options).write(every_type_flush())
    assert SENTINEL.encode() not in capsysbinary.readouterr().out


def test_debug_mode_stands_the_console_in_for_every_remote_sink_and_only_those() -> None:
    forwarders = {name: minimal_raw(name) for name in SINKS}
    sinks = build_sinks(Config(debug_mode=True, forwarders=forwarders))
    for name, (_, sink, _) in zip(forwarders, sinks, strict=True):
        assert type(sink) is (ConsoleSink if SINKS[name].remote else SINKS[name])


# ----- writing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "test_file"), SERVER_KEYS.items())
def test_a_sink_that_needs_a_real_server_is_written_beside_it(key: str, test_file: str) -> None:
    text = (Path(__file__).resolve().parents[2] / test_file).read_text()
    assert "write_leaves_the_aggregates_alone" in text and f'sinks_with_key({{"{key}"}})' in text


@pytest.mark.parametrize("name", [name for name in SINKS if name not in sinks_with_key(set(SERVER_KEYS))])
def test_writing_a_flush_leaves_the_aggregates_alone(name: str, tmp_path: Path,
                                                     capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    cls = SINKS[name]
    with ExitStack() as stack:
        config = minimal_config(name, **local_destination(cls.config_type, stack, tmp_path))
        write_leaves_the_aggregates_alone(cls, config)
