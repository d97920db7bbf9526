"""Real InfluxDB 1.x and carbon-cache servers for the sink tests, on free loopback ports in a temp dir;
and the pipeline the sink tests run.

The programs are Debian's (install_servers.sh installs them); nothing here depends on pytest. Each
server is killed by the kernel if the test process dies, so none outlives a crashed run.
"""

from __future__ import annotations

import base64
import json
import subprocess
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from harness.pipeline import Pipeline
from harness.ports import accepts_tcp, free_tcp_port
from harness.process import ChildProcess

#: The system Python carbon runs on: it has the whisper library the tests read carbon's files with.
SYSTEM_PYTHON = "/usr/bin/python3"

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
    """influxd with authentication on and one admin user, HTTP API on a free loopback port."""

    name = "influxd"

    def __init__(self, work_dir: Path, admin: str, password: str) -> None:
        super().__init__(work_dir)
        self.admin, self.password = admin, password
        self.http_port, self.rpc_port = free_tcp_port(), free_tcp_port()
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
        return ["influxd", "run", "-config", str(self.config_path)]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:
                return response.status == 204
        except OSError:
            return False

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


class CarbonServer(Server):
    """carbon-cache with its own conf and storage dirs, whisper files at one point per second."""

    name = "carbon"

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        self.line_port = free_tcp_port()
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
            PICKLE_RECEIVER_PORT = {free_tcp_port()}
            CACHE_QUERY_INTERFACE = 127.0.0.1
            CACHE_QUERY_PORT = {free_tcp_port()}
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
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.write_url = f"{self.url}/api/v1/write"
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text("global: {}\n")

    def command(self) -> list[str]:
        return ["prometheus", f"--config.file={self.config_path}", f"--storage.tsdb.path={self.dir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
                "--log.level=warn"]

    def ready(self) -> bool:
        return _answers_ok(f"{self.url}/-/ready")

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


class VictoriaMetricsServer(Server):
    """VictoriaMetrics single-node (remote write at /api/v1/write), its storage in the work dir."""

    name = "victoria-metrics"

    def __init__(self, work_dir: Path, basic_auth: tuple[str, str] | None = None) -> None:
        """With ``basic_auth`` (user, password) every endpoint asks for them (``-httpAuth.*``)."""
        super().__init__(work_dir)
        self.port = free_tcp_port()
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
        return _answers_ok(f"{self.url}/health")

    def _get(self, path: str) -> bytes:
        request = urllib.request.Request(f"{self.url}{path}")
        if self.basic_auth:
            token = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            return body

    def samples(self, selector: str) -> dict[str, dict[int, float]]:
        """Every sample of each series ``selector`` picks, through /api/v1/export (after a forced flush,
        so that what was just written is searchable): labels as text → {timestamp in ms: value}."""
        self._get("/internal/force_flush")
        lines = self._get(f"/api/v1/export?{urllib.parse.urlencode({'match[]': selector, 'start': '0'})}")
        found: dict[str, dict[int, float]] = {}
        for line in lines.decode().splitlines():
            series = json.loads(line)
            points = found.setdefault(_series_text(series["metric"]), {})
            for ts, value in zip(series["timestamps"], series["values"], strict=True):
                # A sample stored twice would read as one here: count them instead of overwriting.
                assert ts not in points, f"{series['metric']}: two samples at {ts}"
                points[ts] = float(value)
        return found


def _answers_ok(url: str) -> bool:
    """Whether a GET of ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


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


#: What the sink outage tests send throughout: a counter and a gauge in one datagram.
OUTAGE_LOAD = {"outage": "o.c:1|c|#run:outage\no.g:7|g"}
