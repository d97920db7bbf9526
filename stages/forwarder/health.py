"""The health endpoint: ``GET /health`` answers 200 when every stage is working and every sink delivering.

Off unless ``health_address`` is set; meant for loopback (a load balancer's or orchestrator's probe).
503 carries the reasons (a stage silent too long, a sink failing), never a secret. Nothing else is
served: no admin port, no way to change anything.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from stages.figures import read_all
from stages.ring import ring_shards
from stages.status import health

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(self, address: tuple[str, int], run_dir: Path, shards: int, interval: float) -> None:
        def answer() -> tuple[int, bytes]:
            reasons = health(read_all(run_dir), ring_shards(run_dir, shards), interval)
            body = {"status": "unhealthy" if reasons else "ok", "reasons": reasons}
            return (503 if reasons else 200), json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
                code, body = answer() if self.path.split("?")[0] == "/health" else (404, b'{"status": "not found"}')
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                """Probes come every few seconds: not worth a log line each."""

        self.server = ThreadingHTTPServer(address, Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        self.thread.start()
        host, port = self.server.server_address[:2]
        log.info("Health endpoint on http://%s:%d/health", host, port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
