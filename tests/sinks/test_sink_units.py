"""The pure parts of the influxdb, graphite and prometheus sinks, and their error handling against stub servers."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stages.common.config import Config, ConfigError, load_section
from stages.common.contract import FlushHeader
from stages.forwarder.sinks import build_sinks
from stages.forwarder.sinks import influxdb as influxdb_module
from stages.forwarder.sinks.base import Flush, SinkError
from stages.forwarder.sinks.console import ConsoleSink
from stages.forwarder.sinks.graphite import MAX_LINE_BYTES, GraphiteConfig, GraphiteLines, GraphiteSink
from stages.forwarder.sinks.influxdb import InfluxDBConfig, InfluxDBSink
from stages.forwarder.sinks.prometheus import (
    PrometheusConfig,
    PrometheusSink,
    SeriesStore,
    label_name,
    metric_name,
    quantile,
)
from tests.sinks.servers import reply

STAMP = 1795597610


def counter(name: str = "api.requests", value: float = 42.0, /, **tags: str) -> dict[str, Any]:
    return {"name": name, "type": "counter", "tags": tags, "timestamp": STAMP, "interval": 10, "value": value,
            "rate": value / 10}


def gauge(name: str = "room.temp", value: float = 21.5, /, **tags: str) -> dict[str, Any]:
    return {"name": name, "type": "gauge", "tags": tags, "timestamp": STAMP, "interval": 10, "value": value}


def timer(name: str = "api.latency", /, **tags: str) -> dict[str, Any]:
    stats = {"count": 4.0, "sum": 100.0, "min": 10.0, "max": 40.0, "mean": 25.0, "median": 25.0, "stddev": 11.18,
             "p50": 20.0, "p90": 40.0, "p99_9": 40.0}
    return {"name": name, "type": "timer", "tags": tags, "timestamp": STAMP, "interval": 10, "stats": stats}


def flush(*aggregates: dict[str, Any]) -> Flush:
    header = FlushHeader(shard=0, shards=1, epoch=1, seq=1, interval_start=STAMP - 10.0, interval=10.0,
                         n=len(aggregates))
    return Flush(header, list(aggregates), 0)


# ----- graphite ----------------------------------------------------------------------------------


def test_graphite_naming_follows_statsds_graphite_backend() -> None:
    lines = GraphiteLines("", "graphite")
    assert lines.lines(counter(route="/login", env="prod")) == [
        f"api.requests.count;env=prod;route=/login 42.0 {STAMP}",
        f"api.requests.rate;env=prod;route=/login 4.2 {STAMP}"]
    assert lines.lines(gauge()) == [f"room.temp 21.5 {STAMP}"]
    assert lines.lines({**gauge("users"), "type": "set", "value": 3}) == [f"users.count 3.0 {STAMP}"]
    assert lines.lines({**gauge("boot"), "type": "trace", "value": 1}) == [f"boot.count 1.0 {STAMP}"]
    assert [line.split(" ")[0] for line in lines.lines(timer(host="h1"))] == [
        f"api.latency.{stat};host=h1" for stat in timer()["stats"]]


def test_graphite_path_style_folds_sorted_tags_before_the_statistic() -> None:
    lines = GraphiteLines("stats.", "path")
    assert lines.lines(counter(route="/login", env="prod")) == [
        f"stats.api.requests.env.prod.route._login.count 42.0 {STAMP}",
        f"stats.api.requests.env.prod.route._login.rate 4.2 {STAMP}"]
    (folded,) = lines.lines(gauge(**{"host.name": "web-1.example"}))
    assert folded == f"stats.room.temp.host_name.web-1_example 21.5 {STAMP}"


def test_graphite_sanitises_what_a_path_or_a_tag_cannot_hold() -> None:
    tagged = GraphiteLines("", "graphite")
    (line,) = tagged.lines(gauge("my app/..req ms;x", **{"k=1 ": "v;w x", "t": "~tilde", "empty": "", "name": "n"}))
    assert line == f"my_app_.req_ms_x;k_1_=v_w_x;t=_tilde 21.5 {STAMP}"
    (path,) = GraphiteLines("", "path").lines(gauge(".a..b.", name="n", empty=""))
    assert path == f"a.b.name.n 21.5 {STAMP}"
    assert GraphiteLines("", "path").lines({**gauge(), "timestamp": STAMP + 0.5})[0].endswith(f" {STAMP}.5")


def test_graphite_config_checks_prefix_and_tag_style() -> None:
    assert load_section(GraphiteConfig, {}, "forwarders.graphite") == GraphiteConfig()
    assert GraphiteConfig().port == 2003 and GraphiteConfig().tag_style == "graphite"
    with pytest.raises(ConfigError, match="forwarders.graphite.prefix"):
        load_section(GraphiteConfig, {"prefix": "a b"}, "forwarders.graphite")
    with pytest.raises(ConfigError, match="tag_style: must be one of graphite, path"):
        load_section(GraphiteConfig, {"tag_style": "dots"}, "forwarders.graphite")


class LineServer:
    """A TCP server that takes connections one after another and reads what each one sent."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(5)
        self.port = self.listener.getsockname()[1]

    def accept(self) -> socket.socket:
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        return conn

    @staticmethod
    def read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.listener.close()


def line(value: float) -> bytes:
    return f"room.temp {value!r} {STAMP}\n".encode()


def test_graphite_sink_reconnects_when_carbon_closed_the_connection_and_loses_nothing() -> None:
    server = LineServer()
    sink = GraphiteSink(GraphiteConfig(port=server.port))
    try:
        sink.open()
        with server.accept() as first:
            sink.write(flush(gauge("room.temp", 1.0)))
            assert LineServer.read(first, len(line(1.0))) == line(1.0)
        # Closed as a restarting carbon closes it: the kernel would still take a write into it.
        time.sleep(0.1)
        sink.write(flush(gauge("room.temp", 2.0)))
        with server.accept() as second:
            assert LineServer.read(second, len(line(2.0))) == line(2.0)
    finally:
        sink.close()
        server.close()
    with pytest.raises(SinkError) as error:
        sink.write(flush(gauge()))
    assert error.value.retriable and "cannot connect to carbon" in str(error.value)


def test_graphite_sink_leaves_out_lines_carbon_would_drop_the_connection_for() -> None:
    server = LineServer()
    sink = GraphiteSink(GraphiteConfig(port=server.port))
    try:
        sink.write(flush(gauge("room.temp", 1.0, big="x" * MAX_LINE_BYTES), gauge("room.temp", 2.0)))
        with server.accept() as conn:
            sink.close()
            assert LineServer.read(conn, 1 << 20) == line(2.0)
    finally:
        sink.close()
        server.close()


# ----- prometheus --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("api.requests", "api_requests"), ("3rd-party", "_3rd_party"), ("a:b_c", "a:b_c"), ("naïve", "na_ve"),
    ("", "_"), ("_x", "_x"),
])
def test_prometheus_metric_names(name: str, expected: str) -> None:
    assert metric_name(name) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("room.name", "room_name"), ("a:b", "a_b"), ("9lives", "_9lives"), ("__meta", "_meta"), ("___", "_"),
    ("", "_"), ("ok_1", "ok_1"),
])
def test_prometheus_label_names(name: str, expected: str) -> None:
    assert label_name(name) == expected


def test_prometheus_quantiles_from_percentile_statistics() -> None:
    assert [quantile(s) for s in ("p50", "p90", "p99", "p99_9", "p100", "median", "count")] == [
        "0.5", "0.9", "0.99", "0.999", "1", None, None]


def test_prometheus_sink_accumulates_counters_and_summaries_and_parses_back() -> None:
    sink = PrometheusSink(PrometheusConfig())
    sink.write(flush(counter("api.requests", 3.0, **{"route": "/a", "host.name": "h"}), timer(quantile="q"), gauge()))
    sink.write(flush(counter("api.requests", 4.0, **{"route": "/a", "host.name": "h"}), timer(quantile="q"),
                     gauge("room.temp", 20.0)))
    text = generate_latest(sink.registry).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    req = families["api_requests"]
    assert (req.type, [(s.name, s.labels, s.value) for s in req.samples]) == (
        "counter", [("api_requests_total", {"host_name": "h", "route": "/a"}, 7.0)])
    latency = {(s.name, s.labels.get("quantile")): s.value for s in families["api_latency"].samples}
    assert latency == {("api_latency", "0.5"): 20.0, ("api_latency", "0.9"): 40.0, ("api_latency", "0.999"): 40.0,
                       ("api_latency_sum", None): 200.0, ("api_latency_count", None): 8.0}
    assert all(s.labels.get("exported_quantile") == "q" for s in families["api_latency"].samples)
    assert families["room_temp"].samples[0].value == 20.0
    assert families["room_temp"].documentation == "pystatsd gauge room.temp"


def test_prometheus_store_expires_series_and_serves_one_kind_per_name() -> None:
    store = SeriesStore(expire_after_secs=5)
    store.update([counter("x", 1.0), gauge("y")], 100.0)
    store.update([gauge("x", 9.0)], 103.0)
    snapshot = store.snapshot(104.0)
    assert [(s.kind, s.value) for s in snapshot["x"]] == [("gauge", 9.0)]
    assert set(store.snapshot(106.0)) == {"x"}  # y last came at 100: past its 5 s
    assert store.snapshot(109.0) == {}


def test_prometheus_config_serves_on_loopback_by_default() -> None:
    config = load_section(PrometheusConfig, {}, "forwarders.prometheus")
    assert (config.listen_address, config.port, config.expire_after_secs) == ("127.0.0.1", 9102, 300.0)
    with pytest.raises(ConfigError, match="expire_after_secs"):
        load_section(PrometheusConfig, {"expire_after_secs": 0}, "forwarders.prometheus")


def test_prometheus_sink_reports_a_taken_port_as_retriable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        sink = PrometheusSink(PrometheusConfig(port=taken.getsockname()[1]))
        with pytest.raises(SinkError) as error:
            sink.open()
    assert error.value.retriable and "cannot serve /metrics" in str(error.value)


# ----- influxdb ----------------------------------------------------------------------------------


def influx_config(**settings: Any) -> InfluxDBConfig:
    return load_section(InfluxDBConfig, {"database": "db", **settings}, "forwarders.influxdb")


def test_influxdb_config_keeps_credentials_out_of_urls_and_messages(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        influx_config(url="http://admin:hunter2@127.0.0.1:8086")
    assert "hunter2" not in str(error.value) and "username and password" in str(error.value)
    with pytest.raises(ConfigError, match="url: expected"):
        influx_config(url="ftp://127.0.0.1")
    with pytest.raises(ConfigError, match="precision: must be one of ns, u, ms, s"):
        influx_config(precision="h")
    with pytest.raises(ConfigError, match="username: a password needs a username"):
        influx_config(password="x")
    with pytest.raises(ConfigError, match="forwarders.influxdb.database: required"):
        load_section(InfluxDBConfig, {}, "forwarders.influxdb")
    monkeypatch.setenv("TEST_INFLUX_PW", "from-env")
    config = influx_config(username="u", password_env="TEST_INFLUX_PW")
    assert config.password is not None and config.password.reveal() == "from-env"
    assert "from-env" not in repr(config)
    with pytest.raises(ConfigError, match="set only one of password, password_env and password_file"):
        influx_config(username="u", password="a", password_env="TEST_INFLUX_PW")


def test_influxdb_precision_adapts_the_encoders_nanoseconds() -> None:
    for precision, stamp in (("ns", STAMP * 10**9), ("u", STAMP * 10**6), ("ms", STAMP * 10**3), ("s", STAMP)):
        (line,) = InfluxDBSink(influx_config(precision=precision))._lines(flush(gauge(room="a b")))
        assert line == b"room.temp,room=a\\ b value=21.5 %d" % stamp


class StubInflux(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next status of ``statuses`` (then 204), recording every request."""

    statuses: list[int] = []
    requests: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # the name http.server calls
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append((self.path, dict(self.headers), body))
        status = self.statuses.pop(0) if self.statuses else 204
        reply(self, status, b'{"error":"stub says no"}' if status >= 300 else b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def stub_influx() -> Iterator[tuple[str, type[StubInflux]]]:
    handler = type("Handler", (StubInflux,), {"statuses": [], "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_influxdb_sink_posts_line_protocol_with_basic_auth(stub_influx: tuple[str, type[StubInflux]]) -> None:
    url, handler = stub_influx
    sink = InfluxDBSink(influx_config(url=url + "/prefix/", retention_policy="week", username="u", password="p w",
                                      create_database=True))
    sink.open()
    sink.write(flush(counter(env="prod"), gauge()))
    sink.close()
    (create_path, create_headers, create_body), (path, headers, body) = handler.requests
    assert create_path == "/prefix/query"
    assert urllib.parse.parse_qs(create_body.decode()) == {"q": ['CREATE DATABASE "db"']}
    assert urllib.parse.urlsplit(path).path == "/prefix/write"
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(path).query) == {"db": ["db"], "rp": ["week"],
                                                                       "precision": ["ns"]}
    assert headers["Authorization"] == "Basic dTpwIHc="  # u:p w
    assert body == (f"api.requests,env=prod value=42.0,rate=4.2 {STAMP}000000000\n"
                    f"room.temp value=21.5 {STAMP}000000000").encode()


@pytest.mark.parametrize(("status", "retriable"), [
    (500, True), (503, True), (429, True), (401, True), (403, True), (404, True), (400, False), (413, False),
])
def test_influxdb_sink_retries_what_the_server_may_fix_and_drops_what_it_refuses(
        stub_influx: tuple[str, type[StubInflux]], status: int, retriable: bool) -> None:
    url, handler = stub_influx
    handler.statuses.append(status)
    sink = InfluxDBSink(influx_config(url=url))
    with pytest.raises(SinkError) as error:
        sink.write(flush(gauge()))
    assert error.value.retriable is retriable
    assert f"HTTP {status}: stub says no" in str(error.value)


def test_influxdb_sink_resumes_a_flush_at_the_request_that_failed(stub_influx: tuple[str, type[StubInflux]],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = stub_influx
    monkeypatch.setattr(influxdb_module, "LINES_PER_REQUEST", 2)
    handler.statuses.extend([204, 503])
    sink = InfluxDBSink(influx_config(url=url))
    whole = flush(*(gauge(f"g{i}") for i in range(5)))
    with pytest.raises(SinkError):
        sink.write(whole)
    sink.write(whole)
    bodies = [body.decode().count("\n") + 1 for _, _, body in handler.requests]
    firsts = [body.decode().split(" ")[0] for _, _, body in handler.requests]
    assert (bodies, firsts) == ([2, 2, 2, 1], ["g0", "g2", "g2", "g4"])


def test_influxdb_sink_reports_an_absent_server_as_retriable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]
    sink = InfluxDBSink(influx_config(url=f"http://127.0.0.1:{port}"))
    with pytest.raises(SinkError) as error:
        sink.write(flush(gauge()))
    assert error.value.retriable and "unreachable" in str(error.value)


@pytest.mark.parametrize(("settings", "problem"), [
    ({"org": "o"}, "org: not a key of api_version 1 (only of api_version 2)"),
    ({"token": "t"}, "token: not a key of api_version 1 (only of api_version 2 or 3)"),
    ({"api_version": 2, "org": "o", "bucket": "b", "username": "u"},
     "username: not a key of api_version 2 (only of api_version 1)"),
    ({"api_version": 2, "org": "o", "bucket": "b", "database": "db"},
     "database: not a key of api_version 2 (only of api_version 1 or 3)"),
    ({"api_version": 2, "org": "o", "bucket": "b", "create_database": False},
     "create_database: not a key of api_version 2 (only of api_version 1)"),
    ({"api_version": 3, "database": "db", "bucket": "b"}, "bucket: not a key of api_version 3 (only of api_version 2)"),
    ({"api_version": 3, "database": "db", "retention_policy": "week"},
     "retention_policy: not a key of api_version 3 (only of api_version 1)"),
    ({"api_version": 2, "bucket": "b"}, "org: required with api_version 2"),
    ({"api_version": 2, "org": "o"}, "bucket: required with api_version 2"),
    ({"api_version": 2, "org": "o", "bucket": ""}, "bucket: must not be empty"),
    ({"api_version": 3}, "database: required with api_version 3"),
    ({}, "database: required with api_version 1"),
    ({"api_version": 4, "database": "db"}, "api_version: must be one of 1, 2, 3, got 4"),
])
def test_influxdb_config_refuses_the_keys_of_another_api_version_naming_them(settings: dict[str, Any],
                                                                             problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_section(InfluxDBConfig, settings, "forwarders.influxdb")
    assert str(error.value) == f"forwarders.influxdb.{problem}"


def test_influxdb_config_reads_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "env-token")
    config = influx_config(api_version=3, token_env="TEST_INFLUX_TOKEN")
    assert config.token is not None and config.token.reveal() == "env-token"
    assert "env-token" not in repr(config)
    # token_file: the pipeline tests read it (tests/sinks/test_influxdb_api_versions.py).
    with pytest.raises(ConfigError, match="token: set only one of token, token_env and token_file"):
        influx_config(api_version=3, token="a", token_env="TEST_INFLUX_TOKEN")
    # Each version's own default address: InfluxDB 3 listens on 8181.
    assert [influx_config(api_version=v, **({"org": "o", "bucket": "b", "database": None} if v == 2 else {})).url
            for v in (1, 2, 3)] == ["http://127.0.0.1:8086", "http://127.0.0.1:8086", "http://127.0.0.1:8181"]


@pytest.mark.parametrize(("settings", "path", "query", "authorization"), [
    ({"api_version": 2, "org": "my org", "bucket": "db/rp", "token": "user:secret", "precision": "u"},
     "/prefix/api/v2/write", {"org": ["my org"], "bucket": ["db/rp"], "precision": ["us"]}, "Token user:secret"),
    ({"api_version": 3, "database": "metrics", "token": "apiv3_x", "precision": "ms"},
     "/prefix/api/v3/write_lp", {"db": ["metrics"], "precision": ["millisecond"]}, "Bearer apiv3_x"),
    ({"api_version": 3, "database": "metrics"}, "/prefix/api/v3/write_lp",
     {"db": ["metrics"], "precision": ["nanosecond"]}, None),
], ids=["v2", "v3", "v3-no-token"])
def test_influxdb_sink_writes_to_each_api_versions_endpoint_with_its_token(
        stub_influx: tuple[str, type[StubInflux]], settings: dict[str, Any], path: str, query: dict[str, list[str]],
        authorization: str | None, caplog: pytest.LogCaptureFixture) -> None:
    """No InfluxDB 3 can be had here: this stub stands for its /api/v3/write_lp (path, query, header, body)."""
    url, handler = stub_influx
    settings = {"url": url + "/prefix/", **settings}
    if "org" in settings:
        settings["database"] = None
    config = influx_config(**settings)
    sink = InfluxDBSink(config)
    sink.open()
    sink.write(flush(counter(env="prod"), gauge()))
    sink.close()
    ((sent_path, headers, body),) = handler.requests  # no CREATE DATABASE: that is version 1's
    assert urllib.parse.urlsplit(sent_path).path == path
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(sent_path).query) == query
    assert headers.get("Authorization") == authorization
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    divisor = influxdb_module.PRECISIONS[config.precision]
    stamp = STAMP * 10**9 // divisor
    assert body == (f"api.requests,env=prod value=42.0,rate=4.2 {stamp}\nroom.temp value=21.5 {stamp}").encode()
    assert "secret" not in repr(config) and "apiv3_x" not in repr(config) and "secret" not in caplog.text


@pytest.mark.parametrize("api_version", [2, 3])
@pytest.mark.parametrize(("status", "retriable", "hint"), [
    (500, True, ""), (503, True, ""), (429, True, ""), (401, True, "check the token"), (403, True, "check the token"),
    (404, True, "create "), (400, False, "data refused"), (413, False, "data refused"), (422, False, "data refused"),
])
def test_influxdb_sink_retries_and_drops_alike_in_every_api_version(
        stub_influx: tuple[str, type[StubInflux]], api_version: int, status: int, retriable: bool,
        hint: str) -> None:
    url, handler = stub_influx
    handler.statuses.append(status)
    where = {"org": "o", "bucket": "b"} if api_version == 2 else {"database": "db"}
    sink = InfluxDBSink(load_section(InfluxDBConfig, {"url": url, "api_version": api_version, "token": "t", **where},
                                     "forwarders.influxdb"))
    with pytest.raises(SinkError) as error:
        sink.write(flush(gauge()))
    assert error.value.retriable is retriable
    assert f"HTTP {status}: stub says no" in str(error.value) and hint in str(error.value)
    if status == 404:
        assert ("create bucket 'b'" if api_version == 2 else "create database 'db'") in str(error.value)
    sink.write(flush(gauge()))  # the next answer is 204
    assert len(handler.requests) == 2


# ----- all three ---------------------------------------------------------------------------------


def test_debug_mode_prints_instead_of_sending(tmp_path: Path) -> None:
    forwarders = {"influxdb": {"database": "db"}, "graphite": {}, "prometheus": {}}
    sinks = build_sinks(Config(debug_mode=True, forwarders=forwarders))
    assert [type(sink) for _, sink, _ in sinks] == [ConsoleSink] * 3
    assert [type(cast(ConsoleSink, sink).encoder).__name__ for _, sink, _ in sinks] == [
        "InfluxEncoder", "JsonEncoder", "JsonEncoder"]


# ----- console -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("forwarders", "debug_mode", "printed"), [
    ({}, False, ["api.requests"]),
    ({"console": {}}, False, ["api.requests"]),
    ({"console": {"self_metrics": True}}, False, ["api.requests", "pystatsd.receiver.metrics"]),
    ({"graphite": {}}, True, ["api.requests", "pystatsd.receiver.metrics"]),
], ids=["default", "console", "console-self-metrics", "debug-mode-stand-in"])
def test_the_console_shows_the_user_s_aggregates_and_the_daemon_s_own_only_when_asked(
        capsysbinary: pytest.CaptureFixture[bytes], forwarders: dict[str, Any], debug_mode: bool,
        printed: list[str]) -> None:
    ((_, sink, _),) = build_sinks(Config(debug_mode=debug_mode, forwarders=forwarders))
    sink.write(flush(counter(), counter("pystatsd.receiver.metrics", 3.0)))
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert [line.split('"')[3] if line.startswith("{") else line.split(" ")[0] for line in lines] == printed
