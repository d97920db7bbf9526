"""POSTing a sink's requests over one kept-open HTTP connection, and what an answer means for the flush.

The rule every HTTP push sink follows (remote write, OTLP): a 2xx answer is delivered; a connection
error, 429 or 5xx is retried, never before the time the answer's ``Retry-After`` asked for (at most
:data:`MAX_RETRY_AFTER_SECS`); any other answer is the destination refusing the data itself (a bad
request, credentials, a wrong path), which would fail forever, so the flush is dropped and counted.
"""

from __future__ import annotations

import email.utils
import http.client
import time
import urllib.parse
from dataclasses import dataclass

from stages.common.config import Secret
from stages.forwarder.sinks.base import SinkError

#: How much of an error answer is quoted in the log.
ERROR_TEXT_CHARS = 300
#: The longest ``Retry-After`` taken as it is; a longer one waits this long.
MAX_RETRY_AFTER_SECS = 300.0


@dataclass(frozen=True, kw_only=True)
class PasswordKeys:
    """The keys of a sink that logs in with a user name and a password (the password from the config,
    ``password_env`` or ``password_file``: stages.common.config.resolve_secret)."""

    username: str | None = None
    password: Secret | None = None
    password_env: str | None = None
    password_file: str | None = None


@dataclass(frozen=True, kw_only=True)
class PushKeys:
    """The keys of a sink that pushes requests and keeps running totals: how long a request may take,
    and how long an idle series' totals are kept."""

    timeout_secs: float = 10.0
    expire_after_secs: float = 300.0

    def check_push_keys(self) -> None:
        if not 0 < self.timeout_secs <= 600:
            raise ValueError("timeout_secs: must be more than 0 and at most 600")
        if self.expire_after_secs <= 0:
            raise ValueError("expire_after_secs: must be more than 0")


def check_http_url(url: str, key: str, credentials_in: str) -> None:
    """Raise ValueError naming ``key`` unless ``url`` is ``http(s)://host[:port][/path]`` without
    credentials (they belong in ``credentials_in``: the keys that keep them out of logs)."""
    parts = urllib.parse.urlsplit(url)
    # Checked first, and the URL not quoted: it would show the password.
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{key}: put the credentials in {credentials_in}, not in the URL")
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number, or out of range
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.fragment:
        raise ValueError(f"{key}: expected http(s)://host:port/path, got {url!r}")


def retry_after_secs(value: str | None) -> float:
    """A ``Retry-After`` header's wait in seconds (delay-seconds or an HTTP date), at most
    :data:`MAX_RETRY_AFTER_SECS`; 0 when absent or unreadable."""
    if not value:
        return 0.0
    try:
        secs = float(value)
    except ValueError:
        try:
            secs = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(secs, 0.0), MAX_RETRY_AFTER_SECS)


class HttpPoster:
    """POSTs to one URL over a kept-open connection, opened again when the server dropped it.

    ``what`` names the destination in errors (``"remote write at http://..."``); ``check`` raises the
    SinkError an answer calls for, and holds back the next request while a ``Retry-After`` lasts.
    """

    def __init__(self, url: str, what: str, timeout_secs: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname or "", parts.port
        self.path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self.what = what
        self.timeout_secs = timeout_secs
        self.conn: http.client.HTTPConnection | None = None
        #: No request before this (monotonic): the time a ``Retry-After`` asked for.
        self.not_before = 0.0

    def wait_over(self) -> None:
        """Raise a retriable SinkError while the last answer's ``Retry-After`` lasts."""
        wait = self.not_before - time.monotonic()
        if wait > 0:
            raise SinkError(f"{self.what} asked to wait: {wait:.1f} s more (Retry-After)")

    def post(self, body: bytes, headers: dict[str, str], path: str | None = None) -> tuple[int, bytes, str | None]:
        """POST ``body`` to the URL's path (or ``path`` on its host): (status, answer, its Retry-After);
        a SinkError when the server cannot be reached."""
        reused = self.conn is not None
        try:
            return self._post(path or self.path, body, headers)
        except SinkError:
            if not reused:
                raise
        # The kept-open connection had been dropped by the server (idle, restarted): one new try at once.
        return self._post(path or self.path, body, headers)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self.conn = cls(self.host, self.port, timeout=self.timeout_secs)
        try:
            self.conn.request("POST", path, body=body, headers=headers)
            response = self.conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise SinkError(f"{self.what} unreachable: {type(exc).__name__}: {exc}") from None
        if response.will_close:
            self.close()
        return response.status, answer, response.getheader("Retry-After")

    def check(self, status: int, body: bytes, retry_after: str | None) -> None:
        """Nothing for a 2xx; a retriable SinkError for 429 and 5xx (after the ``Retry-After``); a
        SinkError(retriable=False) for any other answer, quoting the server's reason."""
        if 200 <= status < 300:
            return
        text = (f"{self.what} answered HTTP {status}: "
                f"{body.decode('utf-8', 'replace').strip()[:ERROR_TEXT_CHARS]}")
        if status == 429 or status >= 500:
            self.not_before = time.monotonic() + retry_after_secs(retry_after)
            raise SinkError(text)
        if status in (401, 403):
            text += " (check the credentials)"
        raise SinkError(f"{text} (data refused, not retried)", retriable=False)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
