"""A loopback HTTP server for the HTTP push sinks' unit tests: it records what it is sent and answers as told,
which the real servers (tests/sinks) cannot be made to do on demand (429 with Retry-After, a 503 between
two requests of one flush, a partial success)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any


class StandIn:
    """Records each POST (path, headers, body) and answers the next of ``answers`` ((status, headers) or
    (status, headers, body)), 204 once they run out."""

    def __init__(self, path: str) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.answers: list[tuple[Any, ...]] = []
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stand_in.requests.append((self.path, dict(self.headers), body))
                status, headers, *rest = stand_in.answers.pop(0) if stand_in.answers else (204, {})
                answer = rest[0] if rest else b""
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base_url + path
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)


def serve(path: str) -> Iterator[StandIn]:
    """A started stand-in whose ``url`` is its address and ``path``, for a fixture to yield from."""
    server = StandIn(path)
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(5)

