"""The YAML config as frozen dataclasses, validated before any socket opens.

A generic loader walks a dataclass's fields: an unknown key, a wrong type or a bad value raises
:class:`ConfigError` naming the dotted key (``forwarders.file.path: ...``), with the likely key for a
misspelling. Sinks declare their own config dataclasses and use :func:`load_section` the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import logging
import math
import os
import re
import socket
import stat
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union

import yaml

from pystatsd.client import DEFAULT_MAX_DATAGRAM, MAX_UDP_PAYLOAD
from pystatsd.ports import check_port
from stages.common.addresses import inet_address, parse_listener, parse_relay
from stages.common.name_glob import text_problem

log = logging.getLogger(__name__)

#: Where the config is looked for when neither ``--config`` nor ``PYSTATSD_CONFIG`` says.
SYSTEM_CONFIG = Path("/etc/pystatsd/pystatsd.conf")
REPO_CONFIG = Path(__file__).resolve().parents[2] / "etc" / "pystatsd.yaml"

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: A config section: every section is a dataclass (load_section reads its fields).
T = TypeVar("T", bound="DataclassInstance")


class ConfigError(Exception):
    """One config problem, or every problem of a section found at once (``problems``); each starts with
    the dotted key it is about, and the message is them all, joined by ``; ``."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class Secret(str):
    """A string that never shows itself in ``repr``, ``str`` formatting or logs."""

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return format("***", spec)

    def reveal(self) -> str:
        """The real value: only for handing to the client library that needs it."""
        return str.__str__(self)


def resolve_secret(value: Secret | None, env: str | None, path: str | None, key: str) -> Secret | None:
    """A secret from the config itself, an environment variable (``<key>_env``) or a file (``<key>_file``)."""
    if sum(x is not None for x in (value, env, path)) > 1:
        raise ValueError(f"{key}: set only one of {key}, {key}_env and {key}_file")
    if env is not None:
        if env not in os.environ:
            raise ValueError(f"{key}_env: environment variable {env!r} is not set")
        return Secret(os.environ[env])
    if path is not None:
        try:
            mode = os.stat(path).st_mode
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{key}_file: cannot read {path!r}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("Secret file %s for %s can be read by other users (chmod 600 it)", path, key)
        return Secret(text)
    return value



@dataclasses.dataclass(frozen=True)
class AgentConfig:
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The name this host's partials carry (format: partials); the system's host name when empty.
    host: str = ""

    @property
    def host_name(self) -> str:
        return self.host or socket.gethostname()


def kafka_brokers(value: str) -> list[str]:
    """``kafka_broker``'s comma-separated host:port list; ValueError naming the key when it is not one."""
    brokers = [b.strip() for b in value.split(",") if b.strip()]
    if not brokers or any(":" not in b for b in brokers):
        raise ValueError(f"kafka_broker: expected host:port[,host:port...], got {value!r}")
    return brokers


#: What kafka-python speaks: the kafka sink's and the fleet tier's input's ``security_protocol`` and ``sasl_mechanism``.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclasses.dataclass(frozen=True, kw_only=True)
class KafkaSecurity:
    """How a Kafka client of pystatsd (the kafka sink, the fleet tier's input) reaches a secured broker."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = "token"
    sasl_password: Secret | None = None
    sasl_password_env: str | None = None
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None

    def check_security(self, fallback: Secret | None = None, fallback_key: str | None = None) -> None:
        """From the owner's ``__post_init__``: ValueError naming the key; the password resolved from its
        ``_env`` or ``_file`` key, else ``fallback`` (the key ``fallback_key``)."""
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security_protocol: must be one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"sasl_mechanism: must be one of {', '.join(SASL_MECHANISMS)}")
        if self.ssl_cafile is not None and not os.path.isfile(self.ssl_cafile):
            raise ValueError(f"ssl_cafile: no such file {self.ssl_cafile!r}")
        if self.ssl_cafile is not None and not os.access(self.ssl_cafile, os.R_OK):
            raise ValueError(f"ssl_cafile: cannot read {self.ssl_cafile!r}")
        password = resolve_secret(self.sasl_password, self.sasl_password_env, self.sasl_password_file, "sasl_password")
        object.__setattr__(self, "sasl_password", password if password is not None else fallback)
        if self.security_protocol.startswith("SASL") and self.sasl_password is None:
            raise ValueError("sasl_password: SASL needs a password" + (f" or {fallback_key}" if fallback_key else ""))

    def warn_insecure(self, logger: logging.Logger) -> None:
        """Said once by each client at its start, in its own log."""
        if self.security_protocol == "SASL_PLAINTEXT":
            logger.warning("Kafka SASL over SASL_PLAINTEXT sends the password unencrypted; use SASL_SSL")

    def security_settings(self) -> dict[str, Any]:
        """kafka-python's settings for them: the only place a secret leaves its wrapper."""
        settings: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_password is not None
            settings.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                            sasl_plain_password=self.sasl_password.reveal())
        if self.ssl_cafile:
            settings["ssl_cafile"] = self.ssl_cafile
        return settings


#: What the fleet tier does with a partial whose interval it already flushed.
LATE_POLICIES = ("merge", "drop")


@dataclasses.dataclass(frozen=True)
class KafkaInputConfig(KafkaSecurity):
    """The fleet tier's input: the edges' partials, read as one consumer group."""

    kafka_broker: str
    kafka_topic: str
    group: str = "pystatsd-global"
    #: An interval is flushed this long after its end: partials later than that are late.
    lateness_seconds: float = 5.0
    #: merge: a late partial is merged into its interval, whose touched series are flushed again as a
    #: correction (revision 1, 2, ...); drop: it is counted and dropped.
    late: str = "merge"
    #: How long after its flush an interval still takes late partials (merge); later ones are dropped, counted.
    late_max_seconds: float = 120.0
    client_id: str = "pystatsd-fleet"

    def __post_init__(self) -> None:
        kafka_brokers(self.kafka_broker)
        self.check_security()
        if not self.kafka_topic:
            raise ValueError("kafka_topic: must not be empty")
        if not self.group:
            raise ValueError("group: must not be empty")
        if not 0 <= self.lateness_seconds <= 3600:
            raise ValueError("lateness_seconds: must be from 0 to 3600")
        if self.late not in LATE_POLICIES:
            raise ValueError(f"late: must be one of {', '.join(LATE_POLICIES)}, got {self.late!r}")
        if not 0 <= self.late_max_seconds <= 86_400:
            raise ValueError("late_max_seconds: must be from 0 to 86400")

    @property
    def brokers(self) -> list[str]:
        return kafka_brokers(self.kafka_broker)


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Where a fleet tier's shards take their input from instead of the receivers."""

    kafka: KafkaInputConfig | None = None

    def __post_init__(self) -> None:
        if self.kafka is None:
            raise ValueError("kafka: the one input there is; required in an input section")


@dataclasses.dataclass(frozen=True)
class HistogramBuckets:
    """One entry of ``histogram_buckets``: the timer-likes whose name ``match`` (a name glob, as the
    rules') matches are counted into ``buckets`` (upper bounds, ascending; ``+Inf`` is implied)."""

    match: str
    buckets: list[float]

    def __post_init__(self) -> None:
        problem = text_problem(self.match)
        if problem is not None:
            raise ValueError(f"match: {problem}")
        if not self.buckets:
            raise ValueError("buckets: must list at least one bound")
        for i, (low, high) in enumerate(itertools.pairwise(self.buckets)):
            if not low < high:
                raise ValueError(f"buckets[{i + 1}]: bounds must be ascending, but {high!r} is not above {low!r}")


@dataclasses.dataclass(frozen=True)
class QueueConfig:
    shard_batches: int = 2000
    forwarder_flushes: int = 1000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name}: must be at least 1")


@dataclasses.dataclass(frozen=True)
class Config:
    bind_address: str = "127.0.0.1"
    bind_port: int = 5090
    debug_mode: bool = False
    agent: AgentConfig = dataclasses.field(default_factory=AgentConfig)
    #: Raw per-sink sections; the forwarder validates them against its sink registry.
    forwarders: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    flush_interval: float = 10.0
    listeners: list[str] = dataclasses.field(default_factory=list)
    unix_socket_mode: str = "0660"
    #: Seconds a tcp:// or unix:// connection may send nothing before the receiver closes it; 0: never.
    tcp_idle_timeout: float = 300.0
    #: Connections one peer (a TCP source address, a Unix stream socket's user) may hold on one listener; 0: no cap.
    tcp_max_connections_per_peer: int = 256
    #: DogStatsD's ``|c:<container id>`` field becomes the tag ``container_id:<id>``; False: ignored.
    keep_container_id: bool = False
    percentiles: list[float] = dataclasses.field(default_factory=lambda: [50.0, 90.0, 95.0, 99.0])
    #: Bucket bounds per name glob for timers, histograms and distributions (the first entry that matches).
    histogram_buckets: list[HistogramBuckets] = dataclasses.field(default_factory=list)
    expire_after_intervals: int = 30
    series_limit_per_name: int = 10_000
    #: Live gauges one shard keeps; a new gauge past it is dropped and counted (the live ones stay exact).
    gauges_limit: int = 100_000
    receive_buffer_bytes: int = 8 * 1024 * 1024
    batch_max_entries: int = 1000
    #: The name batch_max_entries had (it counts series entries, not metrics); still read.
    batch_max_samples: int | None = dataclasses.field(default=None, repr=False)
    batch_max_age_ms: float = 50.0
    self_metrics_prefix: str = "pystatsd."
    run_dir: str = ""
    health_address: str = ""
    queues: QueueConfig = dataclasses.field(default_factory=QueueConfig)
    #: DogStatsD's mapper profiles as datadog.yaml writes them; the receiver's rules check and load them.
    dogstatsd_mapper_profiles: list[Any] = dataclasses.field(default_factory=list)
    #: Set on a fleet tier: its shards read the edges' partials from Kafka, and no receiver runs.
    input: InputConfig | None = None
    #: Raw rules applied by the receiver before sharding; stages.receiver.rules validates them (one key per kind).
    rules: list[Any] = dataclasses.field(default_factory=list)
    #: A statsd_exporter mapping file, relative to the config file (the receiver's rules read it).
    mapping_config: str | None = None
    #: ``udp://host:port`` destinations the receiver sends every line it reads to, unchanged, before parsing.
    relay: list[str] = dataclasses.field(default_factory=list)
    #: The relay's largest datagram: 1432 bytes fit a 1500-byte Ethernet frame after the largest IPv4
    #: header (60) and UDP's (8), so no datagram is fragmented on the way (a lost fragment loses it all).
    relay_max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM

    @property
    def fleet_input(self) -> KafkaInputConfig | None:
        return self.input.kafka if self.input is not None else None

    def __post_init__(self) -> None:
        if not (0 < self.flush_interval <= 3600) or not math.isfinite(self.flush_interval):
            raise ValueError("flush_interval: must be more than 0 and at most 3600 seconds")
        check_port(self.bind_port, "bind_port")
        for pct in self.percentiles:
            if not 0 < pct <= 100:
                raise ValueError(f"percentiles: {pct} is not in (0, 100]")
        if self.expire_after_intervals < 1:
            raise ValueError("expire_after_intervals: must be at least 1")
        if self.series_limit_per_name < 1:
            raise ValueError("series_limit_per_name: must be at least 1")
        if self.gauges_limit < 1:
            raise ValueError("gauges_limit: must be at least 1")
        self._check_stream_limits()
        if self.receive_buffer_bytes < 0:
            raise ValueError("receive_buffer_bytes: must not be negative")
        self._read_old_names()
        if self.batch_max_entries < 1:
            raise ValueError("batch_max_entries: must be at least 1")
        if not 0 < self.batch_max_age_ms <= 1000:
            raise ValueError("batch_max_age_ms: must be more than 0 and at most 1000")
        for i, url in enumerate(self.listeners):
            try:
                parse_listener(url)
            except ValueError as exc:
                raise ValueError(f"listeners[{i}]: {exc}") from None
        self._check_relay()
        if self.health_address:
            try:
                inet_address(self.health_address)
            except ValueError as exc:
                raise ValueError(f"health_address: {exc}") from None
        if not re.fullmatch(r"0?[0-7]{3}", self.unix_socket_mode):
            raise ValueError(
                f"unix_socket_mode: expected an octal mode such as \"0660\", got {self.unix_socket_mode!r}")

    def _check_stream_limits(self) -> None:
        if self.tcp_idle_timeout < 0:
            raise ValueError("tcp_idle_timeout: must not be negative (0 keeps idle connections open)")
        if self.tcp_max_connections_per_peer < 0:
            raise ValueError("tcp_max_connections_per_peer: must not be negative (0: no cap per peer)")

    def _check_relay(self) -> None:
        for i, url in enumerate(self.relay):
            try:
                parse_relay(url)
            except ValueError as exc:
                raise ValueError(f"relay[{i}]: {exc}") from None
        if not 1 <= self.relay_max_datagram_bytes <= MAX_UDP_PAYLOAD:
            raise ValueError(f"relay_max_datagram_bytes: must be from 1 to {MAX_UDP_PAYLOAD} (the largest UDP payload)")

    def _read_old_names(self) -> None:
        if self.batch_max_samples is not None:
            if self.batch_max_entries not in (1000, self.batch_max_samples):
                raise ValueError("batch_max_samples: is the old name of batch_max_entries; set only batch_max_entries")
            log.warning("Config key batch_max_samples is now called batch_max_entries (it counts series entries)")
            object.__setattr__(self, "batch_max_entries", self.batch_max_samples)
            # Read once: a copy (dataclasses.replace) holds only the new name.
            object.__setattr__(self, "batch_max_samples", None)

    def listener_urls(self) -> list[str]:
        """Every listener: ``udp://bind_address:bind_port`` first, then ``listeners`` (each once)."""
        host = f"[{self.bind_address}]" if ":" in self.bind_address else self.bind_address
        urls = [f"udp://{host}:{self.bind_port}"]
        for url in self.listeners:
            if parse_listener(url) not in [parse_listener(u) for u in urls]:
                urls.append(url)
        return urls

    def socket_mode(self) -> int:
        return int(self.unix_socket_mode, 8)


def config_path(explicit: str | None = None) -> Path:
    """``--config``, else ``PYSTATSD_CONFIG``, else the system config if present, else the repo's."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("PYSTATSD_CONFIG")
    if from_env:
        return Path(from_env)
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    return REPO_CONFIG


def load_config(path: Path) -> Config:
    """Read and validate the YAML file at ``path``; :class:`ConfigError` says what is wrong."""
    return read_config(path)[0]


def read_config(path: Path) -> tuple[Config, bytes]:
    """:func:`load_config`, and the bytes it read: a copy of the config that runs is made of them, never
    of the file read again (which may have changed since)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8: {exc}") from exc
    return parse_config(text, path), data


def parse_config(text: str, path: Path) -> Config:
    """The config in ``text``, read from ``path`` (named in every error)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a map of keys, not {_type_word(raw)}")
    raw = dict(raw)
    # The original daemon read these from the environment when its config did not set them.
    if "bind_address" not in raw and os.environ.get("STATSD_BIND_ADDRESS"):
        raw["bind_address"] = os.environ["STATSD_BIND_ADDRESS"]
    if "bind_port" not in raw and os.environ.get("STATSD_BIND_PORT"):
        port = os.environ["STATSD_BIND_PORT"]
        if not port.isdigit():
            raise ConfigError(f"STATSD_BIND_PORT: expected a port number, got {port!r}")
        raw["bind_port"] = int(port)
    return load_section(Config, raw, "")


def load_section(cls: type[T], raw: Any, path: str) -> T:
    """Build dataclass ``cls`` from ``raw``, naming ``path`` (dotted) in every error.

    Every unknown key, value of the wrong type and missing required key of the section (and of the
    sections in it) is one :class:`ConfigError`: a user fixes them all in one go. The checks of the
    dataclass itself (``__post_init__``) can only run once those pass, and stop at their first."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a map of keys, got {_type_word(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in fields:
            problems.append(f"{dotted}: unknown key{_suggestion(str(key), fields)}")
            continue
        try:
            values[key] = _convert(hints[key], value, dotted)
        except ConfigError as exc:
            problems += exc.problems
    for name, f in fields.items():
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{path + '.' if path else ''}{name}: required key is missing")
    if problems:
        raise ConfigError(*problems)
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{path + '.' if path else ''}{exc}") from exc


def _suggestion(key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(known))})"


def _type_word(value: Any) -> str:
    words = {dict: "a map", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "nothing"}
    return f"{words.get(type(value), type(value).__name__)} ({value!r})" if not isinstance(value, (dict, list)) \
        else words[type(value)]


def _convert(hint: Any, value: Any, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, dotted)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return load_section(hint, value, dotted)
    if hint is Any:
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{dotted}: expected a list, got {_type_word(value)}")
        return [_convert(item, v, f"{dotted}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{dotted}: expected a map, got {_type_word(value)}")
        return {str(k): _convert(item, v, f"{dotted}.{k}") for k, v in value.items()}
    return _convert_scalar(hint, value, dotted)


def _convert_scalar(hint: Any, value: Any, dotted: str) -> Any:
    if hint is Secret:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{dotted}: expected a string, got {_type_word(value)}")
        return Secret(str(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted}: expected true or false, got {_type_word(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{dotted}: expected a whole number, got {_type_word(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{dotted}: expected a number, got {_type_word(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{dotted}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        # YAML turns bare words like 5090 or yes into numbers and booleans; a string key wants text.
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{dotted}: expected a string, got {_type_word(value)}")
        return str(value)
    raise ConfigError(f"{dotted}: unsupported config type {hint!r}")
