"""InfluxDB sink: the ``influx`` format's line protocol, POSTed over a kept-open HTTP connection to the write
API of ``api_version`` 1 (``/write``, basic authentication), 2 (``/api/v2/write``, ``Authorization: Token``)
or 3 (``/api/v3/write_lp``, ``Authorization: Bearer``).

A flush goes in requests of at most ``LINES_PER_REQUEST`` lines (InfluxDB's advice for batch size);
after a failure the flush resumes at the request that failed. Writing a point again is harmless:
InfluxDB keeps one point per series and timestamp, so a retried request overwrites it with itself.

Answers: 204 is delivered. A connection error, 429 or 5xx means the server is away or busy:
retried. 401 and 403 (credentials) and 404 (no such database) are retried too, since the data is
fine and the server's setup will be (with ``create_database`` a missing database is created again;
a missing bucket, with api_version 2, once someone creates it).
Any other 4xx means InfluxDB refuses the data itself (a bad line): retrying would loop forever, so
the flush is dropped, counted and logged.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

from stages.common.config import Secret, resolve_secret
from stages.forwarder.encoders import make_encoder
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig, SinkError, not_empty
from stages.forwarder.sinks.http_post import ERROR_TEXT_CHARS, HttpPoster, PasswordKeys
from stages.forwarder.sinks.progress import ChunkedProgress

log = logging.getLogger(__name__)

#: ``precision`` → how many nanoseconds make one unit of it.
PRECISIONS = {"ns": 1, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
API_VERSIONS = (1, 2, 3)
#: ``precision`` as each API version's ``precision`` parameter spells it: 1 takes the key itself, 2
#: ``us`` for microseconds, 3 the long names (the short ones came in later releases of InfluxDB 3).
PRECISION_PARAMETERS = {
    1: {p: p for p in PRECISIONS},
    2: {"ns": "ns", "u": "us", "ms": "ms", "s": "s"},
    3: {"ns": "nanosecond", "u": "microsecond", "ms": "millisecond", "s": "second"},
}
#: The server's address when ``url`` is not set: InfluxDB 3 listens on 8181, the others on 8086.
DEFAULT_URLS = {1: "http://127.0.0.1:8086", 2: "http://127.0.0.1:8086", 3: "http://127.0.0.1:8181"}
#: The keys only some API versions take (the others every one): set with another, they are refused.
VERSION_KEYS = {
    "database": (1, 3), "retention_policy": (1,), "username": (1,), "password": (1,), "password_env": (1,),
    "password_file": (1,), "create_database": (1,), "org": (2,), "bucket": (2,),
    "token": (2, 3), "token_env": (2, 3), "token_file": (2, 3),
}
#: The keys an API version cannot do without.
REQUIRED_KEYS = {1: ("database",), 2: ("org", "bucket"), 3: ("database",)}
#: Lines per request: InfluxDB's documentation advises batches of 5000 points.
LINES_PER_REQUEST = 5000
LINE_PROTOCOL = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class InfluxDBConfig(SinkConfig, PasswordKeys):
    api_version: int = 1
    database: str | None = None
    #: Empty: ``DEFAULT_URLS``' for ``api_version``.
    url: str = ""
    retention_policy: str | None = None
    org: str | None = None
    bucket: str | None = None
    token: Secret | None = None
    token_env: str | None = None
    token_file: str | None = None
    precision: str = "ns"
    timeout_secs: float = 10.0
    #: None when not set: with api_version 2 or 3 then, where it is refused, as it was not set.
    create_database: bool | None = None

    @property
    def format(self) -> str:
        """The lines this sink sends: what ``debug_mode`` prints instead."""
        return "influx"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_version_keys()
        if not self.url:
            object.__setattr__(self, "url", DEFAULT_URLS[self.api_version])
        parts = urllib.parse.urlsplit(self.url)
        # Checked first, and the URL not quoted: it would show the password.
        if parts.username is not None or parts.password is not None:
            raise ValueError("url: put the credentials in username and password, not in the URL")
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:  # not a number, or out of range
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.query or parts.fragment:
            raise ValueError(f"url: expected http://host:port or https://host:port, got {self.url!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0 < self.timeout_secs <= 600:
            raise ValueError("timeout_secs: must be more than 0 and at most 600")
        password = resolve_secret(self.password, self.password_env, self.password_file, "password")
        object.__setattr__(self, "password", password)
        if password is not None and not self.username:
            raise ValueError("username: a password needs a username")
        object.__setattr__(self, "token", resolve_secret(self.token, self.token_env, self.token_file, "token"))

    def _check_version_keys(self) -> None:
        """Refuse an unknown ``api_version``, a key of another version and a missing key of this one."""
        if self.api_version not in API_VERSIONS:
            raise ValueError(f"api_version: must be one of {', '.join(map(str, API_VERSIONS))}, got {self.api_version}")
        for key, versions in VERSION_KEYS.items():
            if getattr(self, key) is not None and self.api_version not in versions:
                takes = " or ".join(map(str, versions))
                raise ValueError(f"{key}: not a key of api_version {self.api_version} (only of api_version {takes})")
        for key in REQUIRED_KEYS[self.api_version]:
            if getattr(self, key) is None:
                raise ValueError(f"{key}: required with api_version {self.api_version}")
            not_empty(getattr(self, key), key)

    def write_target(self) -> tuple[str, Secret | None]:
        """The write API's path and query (below the URL's path), and the ``Authorization`` header's value."""
        precision = PRECISION_PARAMETERS[self.api_version][self.precision]
        if self.api_version == 2:
            query = {"org": self.org, "bucket": self.bucket, "precision": precision}
            return f"/api/v2/write?{urllib.parse.urlencode(query)}", self._token_header("Token")
        if self.api_version == 3:
            query = {"db": self.database, "precision": precision}
            return f"/api/v3/write_lp?{urllib.parse.urlencode(query)}", self._token_header("Bearer")
        query = {"db": self.database, "precision": precision}
        if self.retention_policy:
            query["rp"] = self.retention_policy
        # Basic auth rather than u=/p= parameters: a URL ends up in proxies' logs, a header does not.
        auth = None
        if self.username:
            password = self.password.reveal() if self.password is not None else ""
            auth = Secret("Basic " + base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii"))
        return f"/write?{urllib.parse.urlencode(query)}", auth

    def _token_header(self, scheme: str) -> Secret | None:
        return Secret(f"{scheme} {self.token.reveal()}") if self.token is not None else None

    def credentials_hint(self) -> str:
        """What to check when the server refuses the credentials."""
        return "check username and password" if self.api_version == 1 else "check the token"

    def missing_hint(self) -> str:
        """What to do when the server says where the lines go does not exist."""
        if self.api_version == 2:
            return f"create bucket {self.bucket!r}"
        if self.api_version == 3:
            return f"create database {self.database!r}"
        return f"create database {self.database!r} or set create_database: true"


def _quote_identifier(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _error_text(body: bytes) -> str:
    """InfluxDB's ``{"error": ...}`` message, or the start of whatever else it answered."""
    text = body.decode("utf-8", "replace")
    try:
        text = str(json.loads(text).get("error", text))
    except (ValueError, AttributeError):
        pass
    return text.strip()[:ERROR_TEXT_CHARS]


class InfluxDBSink(BaseSink[InfluxDBConfig], name="influxdb", config_type=InfluxDBConfig, remote=True):
    def __init__(self, config: InfluxDBConfig) -> None:
        super().__init__(config)
        self.encoder = make_encoder(config.format)
        self.divisor = PRECISIONS[config.precision]
        self.poster = HttpPoster(config.url, f"InfluxDB at {config.url}", config.timeout_secs)
        base = urllib.parse.urlsplit(config.url).path.rstrip("/")
        write_path, self.auth = config.write_target()
        self.write_path = base + write_path
        self.query_path = f"{base}/query"
        #: A part is a line: a flush resumes at the first line of the request that failed. Its lines are
        #: made a chunk of aggregates at a time, so a flush being written holds one chunk's.
        self.progress: ChunkedProgress[bytes] = ChunkedProgress(self._chunk_lines)

    def open(self) -> None:
        if self.config.create_database:
            self._create_database()

    def _create_database(self) -> None:
        """CREATE DATABASE (a no-op when it exists); a refusal is logged, the writes then tell."""
        statement = f"CREATE DATABASE {_quote_identifier(self.config.database or '')}"
        status, body = self._request(self.query_path, urllib.parse.urlencode({"q": statement}).encode(),
                                     "application/x-www-form-urlencoded")
        error = _error_text(body) if status != 200 else ""
        if not error:
            try:
                error = str(json.loads(body)["results"][0].get("error", ""))
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                error = f"unexpected answer {body[:ERROR_TEXT_CHARS]!r}"
        if error:
            log.warning("InfluxDB at %s did not create database %r (HTTP %d): %s", self.config.url,
                        self.config.database, status, error)

    def _request(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """POST ``body``: (status, answer)."""
        headers = {"Content-Type": content_type}
        if self.auth is not None:
            headers["Authorization"] = self.auth.reveal()
        status, answer, _ = self.poster.post(body, headers, path)
        return status, answer

    def _lines(self, flush: Flush) -> list[bytes]:
        """Every line of the flush at once (a write makes them a chunk at a time)."""
        return [line for chunk in flush.chunks() for line in self._chunk_lines(flush, chunk, 0)]

    def _chunk_lines(self, flush: Flush, aggregates: list[dict[str, Any]], first: int) -> list[bytes]:
        lines = [record for aggregate in aggregates for record in self.encoder.encode(aggregate)]
        if self.divisor == 1:
            return lines
        adapted = []
        for line in lines:
            # The encoder stamps nanoseconds; the last field of a line is its timestamp.
            head, _, nanos = line.rpartition(b" ")
            adapted.append(b"%s %d" % (head, int(nanos) // self.divisor))
        return adapted

    def write(self, flush: Flush) -> None:
        for lines in self.progress.resume(flush):
            for start in range(0, len(lines), LINES_PER_REQUEST):
                chunk = lines[start:start + LINES_PER_REQUEST]
                body = b"\n".join(chunk)
                status, answer = self._request(self.write_path, body, LINE_PROTOCOL)
                if status == 404 and self.config.create_database:
                    # The database went away (a server reset): make it again, then send this chunk once more.
                    self._create_database()
                    status, answer = self._request(self.write_path, body, LINE_PROTOCOL)
                self._check(status, answer)
                self.progress.delivered(len(chunk))
        self.progress.finish()

    def _check(self, status: int, body: bytes) -> None:
        if 200 <= status < 300:
            return
        text = f"InfluxDB at {self.config.url} answered HTTP {status}: {_error_text(body)}"
        if status in (401, 403):
            raise SinkError(f"{text} ({self.config.credentials_hint()})")
        if status == 404:
            raise SinkError(f"{text} ({self.config.missing_hint()})")
        if status == 429 or status >= 500:
            raise SinkError(text)
        raise SinkError(f"{text} (data refused, not retried)", retriable=False)

    def close(self) -> None:
        self.poster.close()
