"""Config loading: defaults, the error message for each kind of mistake, env fallbacks, sinks, secrets."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stages.common.addresses import parse_listener
from stages.common.config import REPO_CONFIG, Config, ConfigError, QueueConfig, Secret, load_config, load_section
from stages.forwarder.sinks import SINKS, build_sinks
from stages.forwarder.sinks.console import ConsoleSink
from stages.forwarder.sinks.file import FileConfig, FileSink
from stages.forwarder.sinks.kafka import KafkaConfig

ORIGINAL = Path(__file__).resolve().parent.parent / "data" / "configs" / "original.yaml"
ORIGINAL_APIKEY = "74444444444x6xxxxxxxxxxxxxxxxxxxxx"


@pytest.fixture(autouse=True)
def no_bind_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loader falls back to these; a developer's shell must not change what these tests see.
    monkeypatch.delenv("STATSD_BIND_ADDRESS", raising=False)
    monkeypatch.delenv("STATSD_BIND_PORT", raising=False)


@pytest.fixture
def write_config(tmp_path: Path):
    def write(text: str) -> Path:
        path = tmp_path / "pystatsd.yaml"
        path.write_text(text, encoding="utf-8")
        return path
    return write


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def sinks_error(path: Path) -> str:
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        build_sinks(config)
    return str(info.value)


def test_empty_file_gives_the_documented_defaults(write_config) -> None:
    config = load_config(write_config(""))
    assert config == Config()
    assert (config.bind_address, config.bind_port, config.debug_mode) == ("127.0.0.1", 5090, False)
    assert (config.flush_interval, config.percentiles, config.expire_after_intervals) == (10.0, [50, 90, 95, 99], 30)
    assert (config.self_metrics_prefix, config.listeners, config.forwarders) == ("pystatsd.", [], {})
    assert (config.batch_max_entries, config.batch_max_age_ms) == (1000, 50.0)
    assert config.queues == QueueConfig(shard_batches=2000, forwarder_flushes=1000)
    assert config.agent.tags == {}
    assert (config.tcp_idle_timeout, config.tcp_max_connections_per_peer) == (300.0, 256)


#: (test id, config text, the whole error message it gets)
CONFIG_MISTAKES = [
    ("misspelt_key_suggests_the_right_one", "flush_intervall: 10\n",
     "flush_intervall: unknown key (did you mean 'flush_interval'?)"),
    ("wrong_type_names_the_dotted_key", "queues:\n  shard_batches: lots\n",
     "queues.shard_batches: expected a whole number, got a string ('lots')"),
    # YAML makes `yes`/`true` booleans, and bool is an int subclass in Python.
    ("boolean_is_not_a_whole_number", "bind_port: true\n", "bind_port: expected a whole number, got a boolean (True)"),
    ("zero_flush_interval_is_refused", "flush_interval: 0\n",
     "flush_interval: must be more than 0 and at most 3600 seconds"),
    ("bad_nested_value_names_the_dotted_key", "queues:\n  forwarder_flushes: 0\n",
     "queues.forwarder_flushes: must be at least 1"),
    ("negative_idle_timeout_is_refused", "tcp_idle_timeout: -1\n",
     "tcp_idle_timeout: must not be negative (0 keeps idle connections open)"),
    ("negative_per_peer_cap_is_refused", "tcp_max_connections_per_peer: -5\n",
     "tcp_max_connections_per_peer: must not be negative (0: no cap per peer)"),
    ("percentile_out_of_range_is_refused", "percentiles: [50, 101]\n", "percentiles: 101.0 is not in (0, 100]"),
    ("fleet_input_over_sasl_needs_a_password",
     "input:\n  kafka:\n    kafka_broker: 127.0.0.1:9092\n    kafka_topic: p\n    security_protocol: SASL_SSL\n",
     "input.kafka.sasl_password: SASL needs a password"),
    ("fleet_input_names_the_security_protocols",
     "input:\n  kafka:\n    kafka_broker: 127.0.0.1:9092\n    kafka_topic: p\n    security_protocol: TLS\n",
     "input.kafka.security_protocol: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
]


@pytest.mark.parametrize(("text", "message"), [case[1:] for case in CONFIG_MISTAKES],
                         ids=[case[0] for case in CONFIG_MISTAKES])
def test_a_mistake_gets_its_message(write_config, text: str, message: str) -> None:
    assert config_error(write_config(text)) == message


def test_unknown_key_without_a_close_match_lists_the_known_keys(write_config) -> None:
    message = config_error(write_config("zzz: 1\n"))
    assert message.startswith("zzz: unknown key (known keys: agent, batch_max_age_ms, ")


def test_top_level_must_be_a_map(write_config) -> None:
    path = write_config("- a\n- b\n")
    assert config_error(path) == f"{path}: the top level must be a map of keys, not a list"


def test_file_sink_needs_a_path(write_config) -> None:
    assert sinks_error(write_config("forwarders:\n  file: {}\n")) == "forwarders.file.path: required key is missing"


def test_a_section_names_every_missing_required_key_at_once(write_config) -> None:
    assert sinks_error(write_config("forwarders:\n  kafka: {}\n")) == (
        "forwarders.kafka.kafka_broker: required key is missing; forwarders.kafka.kafka_topic: required key is missing")


def test_a_section_names_its_unknown_keys_bad_values_and_missing_keys_at_once(write_config) -> None:
    config = load_config(write_config("forwarders:\n  file:\n    formt: json\n    buffer_max_aggregates: many\n"))
    with pytest.raises(ConfigError) as info:
        build_sinks(config)
    assert info.value.problems == [
        "forwarders.file.formt: unknown key (did you mean 'format'?)",
        "forwarders.file.buffer_max_aggregates: expected a whole number, got a string ('many')",
        "forwarders.file.path: required key is missing",
    ]


def test_problems_of_nested_sections_come_together(write_config) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config("flush_intervall: 1\nqueues:\n  shard_batches: many\n  forwarder_flushs: 1\n"))
    assert info.value.problems == [
        "flush_intervall: unknown key (did you mean 'flush_interval'?)",
        "queues.shard_batches: expected a whole number, got a string ('many')",
        "queues.forwarder_flushs: unknown key (did you mean 'forwarder_flushes'?)",
    ]


def test_unknown_key_inside_a_sink_names_the_dotted_key(write_config, tmp_path: Path) -> None:
    text = f"forwarders:\n  file:\n    path: {tmp_path / 'out.jsonl'}\n    formt: json\n"
    assert sinks_error(write_config(text)) == "forwarders.file.formt: unknown key (did you mean 'format'?)"


def test_misspelt_sink_suggests_the_right_one(write_config) -> None:
    assert sinks_error(write_config("forwarders:\n  fil:\n    path: /tmp/x\n")) == \
        "forwarders.fil: no such sink kind (did you mean 'file'?), and no type says which kind this sink is " \
        f"(known kinds: {', '.join(sorted(SINKS))})"


def test_original_daemon_config_loads_unchanged() -> None:
    config = load_config(ORIGINAL)
    assert (config.bind_address, config.bind_port, config.debug_mode) == ("127.0.0.1", 5090, False)
    assert config.agent.tags == {"environment": "stage", "role": "cfbroker"}
    assert config.forwarders == {"kafka": {
        "kafka_broker": "my-broker.url.abc.net:9092",
        "kafka_topic": "myKafkaTopic",
        "kafka_apikey": ORIGINAL_APIKEY,
        "kafka_tenant_id": "xxxxxxxx69xxxxx69bcxxxxx1adxxxxx",
    }}


def test_loaded_config_does_not_show_the_kafka_apikey() -> None:
    # Anything that logs or prints the config (an error report, a debugger) would leak the key.
    config = load_config(ORIGINAL)
    assert ORIGINAL_APIKEY not in repr(config)
    assert ORIGINAL_APIKEY not in str(config)


def test_bind_env_vars_apply_when_the_file_does_not_set_the_keys(write_config, monkeypatch) -> None:
    monkeypatch.setenv("STATSD_BIND_ADDRESS", "0.0.0.0")
    monkeypatch.setenv("STATSD_BIND_PORT", "9125")
    config = load_config(write_config("flush_interval: 5\n"))
    assert (config.bind_address, config.bind_port) == ("0.0.0.0", 9125)


def test_file_keys_win_over_bind_env_vars(monkeypatch) -> None:
    monkeypatch.setenv("STATSD_BIND_ADDRESS", "0.0.0.0")
    monkeypatch.setenv("STATSD_BIND_PORT", "9125")
    config = load_config(ORIGINAL)
    assert (config.bind_address, config.bind_port) == ("127.0.0.1", 5090)


def test_non_numeric_bind_port_env_var_is_refused(write_config, monkeypatch) -> None:
    monkeypatch.setenv("STATSD_BIND_PORT", "abc")
    assert config_error(write_config("")) == "STATSD_BIND_PORT: expected a port number, got 'abc'"


def test_repo_config_loads_and_prints_to_the_console() -> None:
    config = load_config(REPO_CONFIG)
    assert config.listener_urls() == ["udp://127.0.0.1:5090", "udp://127.0.0.1:8125"]
    assert [type(sink) for _, sink, _ in build_sinks(config)] == [ConsoleSink]


def test_no_forwarders_means_the_console_sink(write_config) -> None:
    assert [type(sink) for _, sink, _ in build_sinks(load_config(write_config("")))] == [ConsoleSink]


def test_debug_mode_replaces_the_remote_kafka_sink_with_the_console(write_config, tmp_path: Path) -> None:
    original = ORIGINAL.read_text(encoding="utf-8").replace("debug_mode: False", "debug_mode: true")
    text = original + f"  file:\n    path: {tmp_path / 'out.jsonl'}\n"
    sinks = build_sinks(load_config(write_config(text)))
    # kafka (remote) becomes a console stand-in; file (local) stays.
    assert [type(sink) for _, sink, _ in sinks] == [ConsoleSink, FileSink]


@pytest.mark.parametrize("url", [
    "udp://127.0.0.1",
    "udp://:8125",
    "udp://127.0.0.1:0",
    "tcp://127.0.0.1:65536",
    "udp://127.0.0.1:port",
])
def test_bad_listener_address_is_refused_naming_it(write_config, url: str) -> None:
    assert config_error(write_config(f'listeners: ["udp://127.0.0.1:8125", "{url}"]\n')) == \
        f"listeners[1]: {url!r}: expected host:port with a port from 1 to 65535"


@pytest.mark.parametrize("url", ["127.0.0.1:8125", "http://127.0.0.1:8125", "udp:/127.0.0.1:8125"])
def test_unknown_listener_kind_is_refused_naming_the_kinds(write_config, url: str) -> None:
    assert config_error(write_config(f'listeners: ["{url}"]\n')) == (
        f"listeners[0]: {url!r} is not a listener URL (one of udp://, tcp://, unixgram://, unix://)")


@pytest.mark.parametrize("url", ["unix://relative.sock", "unixgram://"])
def test_unix_listener_needs_an_absolute_path(write_config, url: str) -> None:
    assert "expected an absolute socket path" in config_error(write_config(f'listeners: ["{url}"]\n'))


def test_unix_socket_mode_must_be_octal(write_config) -> None:
    assert config_error(write_config('unix_socket_mode: "rw-rw----"\n')) == (
        "unix_socket_mode: expected an octal mode such as \"0660\", got 'rw-rw----'")


def test_listeners_must_be_a_list(write_config) -> None:
    assert config_error(write_config('listeners: "udp://127.0.0.1:8125"\n')) == \
        "listeners: expected a list, got a string ('udp://127.0.0.1:8125')"


def test_ipv6_listener_loses_its_brackets() -> None:
    assert parse_listener("udp://[::1]:8125") == ("udp", ("::1", 8125))
    assert parse_listener("unixgram:///run/dsd.sock") == ("unixgram", "/run/dsd.sock")


def test_listener_repeating_the_bind_address_is_not_listened_on_twice(write_config) -> None:
    config = load_config(write_config('listeners: ["udp://127.0.0.1:5090", "udp://0.0.0.0:8125"]\n'))
    assert config.listener_urls() == ["udp://127.0.0.1:5090", "udp://0.0.0.0:8125"]


def test_secret_hides_in_repr_str_and_plain_formatting() -> None:
    secret = Secret("hunter2")
    # %-formatting is what logging does with its arguments.
    percent = "%s" % (secret,)  # noqa: UP031
    assert (repr(secret), str(secret), f"{secret}", f"{secret!r}", percent) == ("'***'", "***", "***", "'***'", "***")
    assert secret.reveal() == "hunter2"


@pytest.mark.parametrize("spec", [">12", "s", "<3"])
def test_secret_hides_under_a_format_spec(spec: str) -> None:
    # str.__format__ with a non-empty spec formats the underlying characters, not __str__.
    assert "hunter2" not in format(Secret("hunter2"), spec)


def test_secret_hides_in_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("connecting with %s / %r", Secret("hunter2"), Secret("hunter2"))
    assert caplog.messages == ["connecting with *** / '***'"]


def test_batch_max_samples_is_still_read_as_batch_max_entries(write_config, caplog) -> None:
    assert load_config(write_config("batch_max_samples: 200\n")).batch_max_entries == 200
    assert "batch_max_samples is now called batch_max_entries" in caplog.text
    with pytest.raises(ConfigError, match="batch_max_samples: is the old name of batch_max_entries"):
        load_config(write_config("batch_max_samples: 200\nbatch_max_entries: 300\n"))


NOBODY = 65534


def as_nobody(work: Callable[[], Any]) -> Any:
    """What ``work`` returns (JSON-able), or the message it raised, when the user nobody runs it: in a
    child process, so that this one keeps root's rights."""
    if os.geteuid() != 0:
        pytest.skip("becoming nobody needs root")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                answer = {"returned": work()}
            except Exception as exc:  # the parent asserts on it
                answer = {"raised": str(exc)}
            os.write(write_end, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer_pipe:
        text = answer_pipe.read()
    os.waitpid(pid, 0)
    return json.loads(text)


@pytest.fixture
def roots_folder() -> Iterator[Path]:
    """A folder root owns, that anyone may look into but only root may write to."""
    with tempfile.TemporaryDirectory(prefix="pst-roots-") as name:
        folder = Path(name)
        folder.chmod(0o755)
        yield folder


def test_a_file_sink_path_in_a_folder_its_user_cannot_write_to_is_a_problem_here(roots_folder: Path) -> None:
    config = FileConfig(path=str(roots_folder / "out.jsonl"))
    assert config.problems_here() == []  # root may
    assert as_nobody(config.problems_here) == {
        "returned": [f"path: cannot open {roots_folder / 'out.jsonl'}: folder {roots_folder} is not writable"]}
    (roots_folder / "out.jsonl").touch(mode=0o644)
    assert as_nobody(config.problems_here) == {
        "returned": [f"path: cannot open {roots_folder / 'out.jsonl'}: Permission denied"]}
    assert not (roots_folder / "out.jsonl").read_bytes()


def test_a_kafka_ssl_cafile_its_user_cannot_read_is_refused(roots_folder: Path) -> None:
    cafile = roots_folder / "ca.pem"
    cafile.write_text("not read by the check\n")
    cafile.chmod(0o600)
    raw = {"kafka_broker": "127.0.0.1:9092", "kafka_topic": "t", "security_protocol": "SSL", "ssl_cafile": str(cafile)}
    assert load_section(KafkaConfig, raw, "forwarders.kafka").ssl_cafile == str(cafile)  # root may
    assert as_nobody(lambda: load_section(KafkaConfig, raw, "forwarders.kafka").ssl_cafile) == {
        "raised": f"forwarders.kafka.ssl_cafile: cannot read {str(cafile)!r}"}
    raw["ssl_cafile"] = str(roots_folder)
    with pytest.raises(ConfigError, match="forwarders.kafka.ssl_cafile: no such file"):
        load_section(KafkaConfig, raw, "forwarders.kafka")


def test_relay_destinations_and_datagram_limit_are_read_and_checked(write_config) -> None:
    config = load_config(write_config('relay: ["udp://127.0.0.1:8135", "udp://[::1]:8125"]\n'))
    assert (config.relay, config.relay_max_datagram_bytes) == (["udp://127.0.0.1:8135", "udp://[::1]:8125"], 1432)
    assert config_error(write_config('relay: ["udp://127.0.0.1:8135", "tcp://127.0.0.1:8125"]\n')) == \
        "relay[1]: 'tcp://127.0.0.1:8125': the relay sends UDP only: expected udp://host:port"
    assert config_error(write_config('relay: ["udp://127.0.0.1:0"]\n')) == \
        "relay[0]: 'udp://127.0.0.1:0': expected host:port with a port from 1 to 65535"
    assert config_error(write_config("relay_max_datagram_bytes: 65508\n")) == \
        "relay_max_datagram_bytes: must be from 1 to 65507 (the largest UDP payload)"


@pytest.mark.parametrize(("entries", "error"), [
    ([{"match": "api.*", "buckets": [0.1, 1]}, {"match": "db.*", "buckets": [1, 1]}],
     "histogram_buckets[1].buckets[1]: bounds must be ascending, but 1.0 is not above 1.0"),
    ([{"match": "a", "buckets": [5, 2]}], "histogram_buckets[0].buckets[1]: bounds must be ascending"),
    ([{"match": "a", "buckets": [1, ".inf"]}], "histogram_buckets[0].buckets[1]: expected a number, got a string"),
    ([{"match": "a", "buckets": []}], "histogram_buckets[0].buckets: must list at least one bound"),
    ([{"match": "", "buckets": [1]}], "histogram_buckets[0].match: must not be empty"),
    ([{"match": "a\tb", "buckets": [1]}], "histogram_buckets[0].match: 'a\\tb' holds a control character"),
    ([{"match": "a"}], "histogram_buckets[0].buckets: required key is missing"),
    ([{"match": "a", "buckets": [1], "le": [2]}], "histogram_buckets[0].le: unknown key"),
    ({"match": "a", "buckets": [1]}, "histogram_buckets: expected a list, got a map"),
])
def test_histogram_buckets_errors_name_the_key_and_index(write_config, entries: Any, error: str) -> None:
    assert config_error(write_config(json.dumps({"histogram_buckets": entries}))).startswith(error)


def test_histogram_buckets_refuse_an_infinite_bound(write_config) -> None:
    path = write_config("histogram_buckets: [{match: a, buckets: [1, .inf]}]")
    assert config_error(path) == "histogram_buckets[0].buckets[1]: expected a finite number, got inf"


def test_histogram_buckets_load_in_order(write_config) -> None:
    config = load_config(write_config("histogram_buckets:\n- {match: 'api.*', buckets: [0.005, 0.1, 1]}\n"
                                      "- {match: '*', buckets: [-5, 0, 100]}\n"))
    assert [(e.match, e.buckets) for e in config.histogram_buckets] == [("api.*", [0.005, 0.1, 1.0]),
                                                                         ("*", [-5.0, 0.0, 100.0])]
