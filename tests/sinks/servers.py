"""Real InfluxDB 1.x, VictoriaMetrics and carbon-cache servers for the sink tests, on free loopback ports in
a temp dir; and the pipeline the sink tests run.

The programs are Debian's and InfluxDB 1.8.3 built from its module (install_servers.sh installs
them); nothing here depends on pytest. Each server is killed by the kernel if the test process dies,
so none outlives a crashed run.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import subprocess
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from harness.paths import CACHE
from harness.pipeline import Pipeline, whole_lines
from harness.ports import accepts_tcp, free_port
from harness.process import ChildProcess
from harness.traffic import SteadyTraffic
from harness.wait import wait_for

#: The system Python carbon runs on: it has the whisper library the tests read carbon's files with.
SYSTEM_PYTHON = "/usr/bin/python3"
#: InfluxDB 1.8.3, the first 1.x to serve InfluxDB 2's /api/v2/write (build_influxd.sh builds it).
INFLUXD_1_8 = CACHE / "influxdb-1.8.3" / "influxd"
#: The OpenTelemetry Collector of the otlp sink tests (build_otelcol.sh builds it).
OTELCOL = CACHE / "otelcol" / "otelcol"

def answers(url: str, status: int) -> bool:
    """Whether a GET of ``url`` is answered with ``status``: how an HTTP server tells it is ready."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == status)
    except OSError:
        return False


class Server:
    """One server process: started, stopped (SIGTERM), restarted on the same ports with the same data."""

    name = "server"

    def __init__(self, work_dir: Path) -> None:
        self.dir = work_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = ChildProcess(self.name, self.dir)
        self.log_path = self.process.log_path

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> None:
        self.process.start(self.command(), self.ready, "to answer", timeout)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, as a service manager stops it; SIGKILL if it is still there after ``timeout``."""
        self.process.stop(timeout)


class InfluxServer(Server):
    """influxd (Debian's, or ``program``) with authentication on and one admin user, HTTP API on a free
    loopback port."""

    name = "influxd"

    def __init__(self, work_dir: Path, admin: str, password: str, program: str = "influxd") -> None:
        super().__init__(work_dir)
        self.admin, self.password, self.program = admin, password, program
        self.http_port, self.rpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.config_path = self.dir / "influxdb.conf"
        self.config_path.write_text(textwrap.dedent(f"""\
            reporting-enabled = false
            bind-address = "127.0.0.1:{self.rpc_port}"
            [meta]
              dir = "{self.dir}/meta"
            [data]
              dir = "{self.dir}/data"
              wal-dir = "{self.dir}/wal"
              query-log-enabled = false
            [monitor]
              store-enabled = false
            [continuous_queries]
              enabled = false
            [http]
              bind-address = "127.0.0.1:{self.http_port}"
              auth-enabled = true
              log-enabled = false
            [logging]
              level = "warn"
              suppress-logo = true
            """))

    def command(self) -> list[str]:
        return [self.program, "run", "-config", str(self.config_path)]

    def ready(self) -> bool:
        return answers(f"{self.url}/ping", 204)

    def start(self, timeout: float = 30) -> None:
        first = not (self.dir / "meta").exists()
        super().start(timeout)
        if first:
            # With no user yet, InfluxDB lets anyone create the first admin; a restart keeps it.
            self.query(f"CREATE USER {self.admin} WITH PASSWORD '{self.password}' WITH ALL PRIVILEGES", auth=False)

    def query(self, statement: str, database: str | None = None, auth: bool = True, epoch: str = "s") -> Any:
        """One InfluxQL statement through the HTTP query API; its ``results``, or AssertionError."""
        params = {"q": statement, "epoch": epoch}
        if database:
            params["db"] = database
        request = urllib.request.Request(f"{self.url}/query", data=urllib.parse.urlencode(params).encode())
        if auth:
            token = base64.b64encode(f"{self.admin}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{statement}: HTTP {exc.code} {exc.read()!r}") from None
        for result in answer["results"]:
            if "error" in result:
                raise AssertionError(f"{statement}: {result['error']}")
        return answer["results"]

    def points(self, database: str, measurement: str, rp: str | None = None) -> list[dict[str, Any]]:
        """Every point of ``measurement``, each a dict of its time, tags and fields (tags as they are stored)."""
        source = f'"{rp}"."{measurement}"' if rp else f'"{measurement}"'
        series = self.query(f"SELECT * FROM {source}", database)[0].get("series", [])
        return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]


class VictoriaMetricsServer(Server):
    """VictoriaMetrics single-node, its storage in the work dir, its HTTP API on a free loopback port:
    remote write at /api/v1/write, InfluxDB's line protocol at /write and /api/v2/write.

    It keeps every sample it is sent, two at one timestamp included (no ``-dedup.minScrapeInterval``):
    a point written twice shows twice in :meth:`points`, and fails :meth:`samples`.
    """

    name = "victoria-metrics"

    def __init__(self, work_dir: Path, basic_auth: tuple[str, str] | None = None) -> None:
        """With ``basic_auth`` (user, password) every endpoint asks for them (``-httpAuth.*``)."""
        super().__init__(work_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.write_url = f"{self.url}/api/v1/write"
        self.basic_auth = basic_auth

    def command(self) -> list[str]:
        auth = [f"-httpAuth.username={self.basic_auth[0]}", f"-httpAuth.password={self.basic_auth[1]}"] \
            if self.basic_auth else []
        return ["victoria-metrics", f"-storageDataPath={self.dir}/data", f"-httpListenAddr=127.0.0.1:{self.port}",
                "-loggerLevel=ERROR", *auth]

    def ready(self) -> bool:
        # /health answers without credentials.
        return answers(f"{self.url}/health", 200)

    def _get(self, path: str, **params: str) -> bytes:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        request = urllib.request.Request(f"{self.url}{path}{query}")
        if self.basic_auth:
            token = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            return body

    def _export(self, selector: str) -> list[dict[str, Any]]:
        """Every series ``selector`` picks, through /api/v1/export, after a forced flush (so that what was
        just written is searchable at once, not within a second)."""
        self._get("/internal/force_flush")
        return [json.loads(line) for line in self._get("/api/v1/export", **{"match[]": selector, "start": "0"})
                .decode().splitlines()]

    def samples(self, selector: str) -> dict[str, dict[int, float]]:
        """Each series ``selector`` picks: labels as text → {timestamp in ms: value}."""
        found: dict[str, dict[int, float]] = {}
        for series in self._export(selector):
            points = found.setdefault(_series_text(series["metric"]), {})
            for ts, value in zip(series["timestamps"], series["values"], strict=True):
                # A sample stored twice would read as one here: count them instead of overwriting.
                assert ts not in points, f"{series['metric']}: two samples at {ts}"
                points[ts] = float(value)
        return found

    def points(self, measurement: str) -> list[dict[str, Any]]:
        """Every point of ``measurement`` written in InfluxDB's line protocol, each a dict of its time (in seconds),
        tags and fields, as :meth:`InfluxServer.points` has them; a point written twice is there twice.

        VictoriaMetrics stores field ``f`` of measurement ``m`` as the series ``m_f``: its samples are
        put back together by tags, timestamp and how many came before at that timestamp."""
        pattern = json.dumps(re.escape(measurement) + "_.+")
        joined: dict[tuple[Any, ...], dict[str, Any]] = {}
        for series in self._export(f"{{__name__=~{pattern}}}"):
            labels = dict(series["metric"])
            field = labels.pop("__name__")[len(measurement) + 1:]
            seen: dict[int, int] = {}
            for stamp, value in zip(series["timestamps"], series["values"], strict=True):
                seen[stamp] = seen.get(stamp, 0) + 1
                point = joined.setdefault((tuple(sorted(labels.items())), stamp, seen[stamp]),
                                          {"time": stamp // 1000, **labels})
                point[field] = float(value)
        return sorted(joined.values(), key=lambda p: (p["time"], sorted((k, str(v)) for k, v in p.items())))


class CarbonServer(Server):
    """carbon-cache with its own conf and storage dirs, whisper files at one point per second."""

    name = "carbon"

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        self.line_port = free_port()
        self.storage = self.dir / "storage"
        self.whisper_dir = self.storage / "whisper"
        conf = self.dir / "conf"
        conf.mkdir(exist_ok=True)
        self.config_path = conf / "carbon.conf"
        # ENABLE_TAGS off: no graphite-web to index tags in; tagged series are stored all the same.
        self.config_path.write_text(textwrap.dedent(f"""\
            [cache]
            STORAGE_DIR = {self.storage}/
            LOCAL_DATA_DIR = {self.whisper_dir}/
            WHITELISTS_DIR = {self.storage}/lists/
            CONF_DIR = {conf}/
            LOG_DIR = {self.dir}/log/
            PID_DIR = {self.dir}/
            USER =
            ENABLE_LOGROTATION = False
            MAX_CACHE_SIZE = inf
            MAX_UPDATES_PER_SECOND = inf
            MAX_UPDATES_PER_SECOND_ON_SHUTDOWN = inf
            MAX_CREATES_PER_MINUTE = inf
            LINE_RECEIVER_INTERFACE = 127.0.0.1
            LINE_RECEIVER_PORT = {self.line_port}
            ENABLE_UDP_LISTENER = False
            PICKLE_RECEIVER_INTERFACE = 127.0.0.1
            PICKLE_RECEIVER_PORT = {free_port()}
            CACHE_QUERY_INTERFACE = 127.0.0.1
            CACHE_QUERY_PORT = {free_port()}
            ENABLE_TAGS = False
            CARBON_METRIC_INTERVAL = 0
            """))
        (conf / "storage-schemas.conf").write_text("[everything]\npattern = .*\nretentions = 1s:1h\n")
        (conf / "storage-aggregation.conf").write_text("[everything]\npattern = .*\nxFilesFactor = 0\n"
                                                      "aggregationMethod = average\n")

    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, "/usr/bin/carbon-cache", f"--config={self.config_path}", "--nodaemon",
                f"--pidfile={self.dir}/carbon.pid", f"--logfile={self.log_path}", "start"]

    def ready(self) -> bool:
        return accepts_tcp(self.line_port)

    def points(self, *metrics: str) -> dict[str, dict[int, float]]:
        """metric (as sent, tags and all) → {timestamp: value} of every point its whisper file holds."""
        result = subprocess.run([SYSTEM_PYTHON, "-c", _READ_WHISPER, str(self.whisper_dir), *metrics],
                                capture_output=True, text=True, timeout=30, check=True)
        return {metric: {int(ts): value for ts, value in points} for metric, points in
                json.loads(result.stdout).items()}

    def stored_metrics(self) -> list[str]:
        """Every untagged metric carbon has a whisper file for (tagged ones are stored by hash)."""
        result = subprocess.run([SYSTEM_PYTHON, "-c", _LIST_WHISPER, str(self.whisper_dir)],
                                capture_output=True, text=True, timeout=30, check=True)
        return sorted(json.loads(result.stdout))


class PrometheusServer(Server):
    """Prometheus with its remote write receiver on, scraping nothing, its TSDB in the work dir."""

    name = "prometheus"

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.write_url = f"{self.url}/api/v1/write"
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text("global: {}\n")

    def command(self) -> list[str]:
        return ["prometheus", f"--config.file={self.config_path}", f"--storage.tsdb.path={self.dir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
                "--log.level=warn"]

    def ready(self) -> bool:
        return answers(f"{self.url}/-/ready", 200)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at now through /api/v1/query: its result (a vector's or a matrix's series)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def samples(self, selector: str) -> dict[str, dict[int, float]]:
        """Every raw sample of the last hour of each series ``selector`` picks: its labels (as text, sorted,
        __name__ first) → {timestamp in ms: value}."""
        return {_series_text(s["metric"]): {round(ts * 1000): float(v) for ts, v in s["values"]}
                for s in self.query(f"{selector}[1h]")}


class OtelCollector(Server):
    """An OpenTelemetry Collector: its OTLP receiver (HTTP) on a free loopback port, its file exporter
    appending each request it takes to a file as a line of OTLP JSON (kept across restarts)."""

    name = "otelcol"

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.out_path = self.dir / "metrics.jsonl"
        self.config_path = self.dir / "otelcol.yaml"
        # The Collector's own metrics off: their default port would clash between two collectors.
        self.config_path.write_text(textwrap.dedent(f"""\
            receivers:
              otlp:
                protocols:
                  http:
                    endpoint: 127.0.0.1:{self.port}
            exporters:
              file:
                path: {self.out_path}
                append: true
                flush_interval: 100ms
            service:
              telemetry:
                metrics:
                  level: none
                logs:
                  level: warn
              pipelines:
                metrics:
                  receivers: [otlp]
                  exporters: [file]
            """))

    def command(self) -> list[str]:
        return [str(OTELCOL), f"--config=file:{self.config_path}"]

    def ready(self) -> bool:
        return accepts_tcp(self.port)

    def points(self, prefix: str) -> list[dict[str, Any]]:
        """Every data point the Collector wrote of the metrics named ``prefix...``, flattened: its metric's
        ``name`` and ``kind`` (sum, gauge, histogram), ``temporality`` (1 delta, 2 cumulative) and
        ``monotonic``, its ``resource`` and ``attributes`` as dicts, ``start`` and ``time`` in seconds, and
        ``value`` (a sum's or gauge's) or ``count``, ``sum``, ``min``, ``max`` and ``buckets`` (a histogram's)."""
        found = []
        text = self.out_path.read_text() if self.out_path.exists() else ""
        for line in whole_lines(text):
            for resource_metrics in json.loads(line)["resourceMetrics"]:
                resource = _otlp_attributes(resource_metrics.get("resource", {}))
                for scope in resource_metrics["scopeMetrics"]:
                    for metric in scope["metrics"]:
                        if metric["name"].startswith(prefix):
                            found += _otlp_points(metric, resource)
        return found


def _otlp_attributes(holder: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"].get("stringValue", "") for a in holder.get("attributes", [])}


def _otlp_points(metric: dict[str, Any], resource: dict[str, str]) -> list[dict[str, Any]]:
    """One OTLP JSON metric's data points, flattened (:meth:`OtelCollector.points`)."""
    kind = next(k for k in ("sum", "gauge", "histogram") if k in metric)
    body = metric[kind]
    points = []
    for point in body["dataPoints"]:
        flat: dict[str, Any] = {
            "name": metric["name"], "kind": kind, "temporality": body.get("aggregationTemporality"),
            "monotonic": body.get("isMonotonic", False), "resource": resource,
            "attributes": _otlp_attributes(point), "time": int(point["timeUnixNano"]) / 1e9,
            "start": int(point.get("startTimeUnixNano", 0)) / 1e9}
        if kind == "histogram":
            flat.update(count=int(point["count"]), sum=point.get("sum"), min=point.get("min"),
                        max=point.get("max"), buckets=[int(c) for c in point.get("bucketCounts", [])],
                        bounds=point.get("explicitBounds", []))
        else:
            # JSON's numbers: asInt comes as a string (int64).
            flat["value"] = float(point["asDouble"]) if "asDouble" in point else int(point.get("asInt", 0))
        points.append(flat)
    return points


def _series_text(labels: dict[str, str]) -> str:
    """A series as PromQL writes it: ``name{a="1",b="2"}``."""
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{labels.get('__name__', '')}{{{rest}}}"


# Run by the system Python: carbon's own functions turn a metric into its file's path.
_READ_WHISPER = """
import json, os, sys, time, whisper
from carbon.util import TaggedSeries
root, metrics = sys.argv[1], sys.argv[2:]
out = {}
for metric in metrics:
    path = os.path.join(root, TaggedSeries.encode(TaggedSeries.parse(metric).path, os.sep, hash_only=True) + ".wsp")
    points = []
    if os.path.exists(path):
        (start, end, step), values = whisper.fetch(path, 0, time.time() + 1)
        points = [(start + i * step, v) for i, v in enumerate(values) if v is not None]
    out[metric] = points
print(json.dumps(out))
"""

_LIST_WHISPER = """
import json, os, sys
from carbon.util import TaggedSeries
root = sys.argv[1]
names = []
for folder, _, files in os.walk(root):
    for name in files:
        relative = os.path.relpath(os.path.join(folder, name[:-4]), root)
        if name.endswith(".wsp") and not relative.startswith("_tagged"):
            names.append(TaggedSeries.decode(relative, os.sep))
print(json.dumps(names))
"""


def sink_pipeline(sink: str, settings: dict[str, Any], flush_interval: float = 1.0, **config: Any) -> Pipeline:
    """A pipeline writing to ``sink`` and, as the record of what was flushed, to its file sink."""
    pipeline = Pipeline(config, flush_interval=flush_interval)
    pipeline.config["forwarders"] = {sink: settings, "file": {"path": str(pipeline.out_path)}}
    pipeline.save_config()
    return pipeline


def own(aggregates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The aggregates that are not the daemon's own metrics."""
    return [a for a in aggregates if not a["name"].startswith("pystatsd.")]


def settled(read: Callable[[], Any], expected: Any, timeout: float = 10.0) -> Any:
    """What ``read`` (what a server stores) gives once it equals ``expected``, or its last answer after
    ``timeout``: a store makes what it took searchable a moment later (VictoriaMetrics within a second
    or so), so one read right after the pipeline stopped may miss the last interval it was sent."""
    deadline = time.monotonic() + timeout
    while (stored := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return stored


#: What the sink outage tests send throughout: a counter and a gauge in one datagram.
OUTAGE_LOAD = {"outage": "o.c:1|c|#run:outage\no.g:7|g"}


class Restartable(Protocol):
    def stop(self) -> None: ...

    def start(self) -> None: ...


S = TypeVar("S", bound=Restartable)


def serving(server: S) -> Iterator[S]:
    """``server`` started, for a fixture to yield from; stopped after."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def through_an_outage(pipeline: Pipeline, server: Restartable, stored: Callable[[], int]) -> list[dict[str, Any]]:
    """OUTAGE_LOAD into a started ``pipeline`` while ``server`` is stopped for 4 s and started again, until
    ``stored()``, how many of o.c's points the server holds, is all the file sink has but its last: the
    o.c aggregates flushed while the server was away."""
    with SteadyTraffic(pipeline.statsd_port, OUTAGE_LOAD, every_secs=0.05, max_secs=60):
        wait_for(stored, 15, "the first points", every=0.5)
        time.sleep(1.5)
        server.stop()
        stopped = time.time()
        time.sleep(4)
        during = [a for a in pipeline.series("o.c") if a["timestamp"] > stopped]
        server.start()
        # Retries back off to 5 s; then the buffered intervals go, oldest first.
        wait_for(lambda: stored() >= len(pipeline.series("o.c")) - 1, 20, "the buffered intervals to arrive",
                 every=0.5)
    return during


def around_the_outage(during: list[dict[str, Any]]) -> int:
    """The fewest intervals a sink outage test compares: those flushed while the server was away, and
    one before and one after them (a count fixed in advance fails on a machine too busy to keep pace)."""
    return len(during) + 2


def reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """Answer a stub server's request with ``status`` and ``body``."""
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
