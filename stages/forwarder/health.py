"""The health endpoint: ``GET /health`` answers 200 when every stage is working and every sink delivering.

Off unless ``health_address`` is set; meant for loopback (a load balancer's or orchestrator's probe).
503 carries the reasons (a stage silent too long, a sink failing), never a secret. Nothing else is
served: no admin port, no way to change anything. Served by :class:`~.probe_server.ProbeServer`:
one thread, a request timeout and a bound on the clients held, whatever the clients do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from stages.common.health_check import health
from stages.forwarder.probe_server import ProbeServer
from stages.rundir.figures import read_all
from stages.rundir.ring import ring_shards

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(self, address: tuple[str, int], run_dir: Path, shards: int, interval: float) -> None:
        def answer(path: str) -> tuple[int, bytes]:
            if path != "/health":
                return 404, b'{"status": "not found"}'
            reasons = health(read_all(run_dir), ring_shards(run_dir, shards), interval)
            body = {"status": "unhealthy" if reasons else "ok", "reasons": reasons}
            return (503 if reasons else 200), json.dumps(body).encode()

        self.server = ProbeServer(address, answer, "health")

    def start(self) -> None:
        self.server.start()
        host, port = self.server.address[:2]
        log.info("Health endpoint on http://%s:%d/health", host, port)

    def close(self) -> None:
        self.server.close()
