"""Questions to the supervisord of a run directory, over its control socket (``supervisor.sock``).

The status command asks which processes run; a stopping shard asks whether the pipeline is being
stopped or that shard alone (a restart, which it hands its intervals on for). No answer (no
supervisord, or one that does not reply in time) is ``None``, never an error.
"""

from __future__ import annotations

import socket
import xmlrpc.client
from pathlib import Path
from typing import Any

#: How long one question may take: a stopping stage asks, and must not hang on the answer.
TIMEOUT_SECS = 2.0
#: How long a stop or start that waits for the process may take: past the longest stopwaitsecs.
WAIT_TIMEOUT_SECS = 120.0


def call(run_dir: Path, method: str, *args: Any, timeout: float = TIMEOUT_SECS) -> Any | None:
    """``supervisor.<method>(*args)``'s answer, or None when supervisord is not there to answer in ``timeout``."""
    from supervisor.xmlrpc import SupervisorTransport

    socket_path = run_dir / "supervisor.sock"
    if not socket_path.exists():
        return None
    transport = SupervisorTransport(None, None, f"unix://{socket_path}")
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    # The transport's Unix socket takes the default timeout when it is made; it has no setting of its own.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return getattr(proxy.supervisor, method)(*args)
    except (OSError, xmlrpc.client.Error):
        return None
    finally:
        socket.setdefaulttimeout(previous)
        transport.close()


def runs_on_without(run_dir: Path) -> bool:
    """Whether the pipeline goes on taking traffic while the asking stage stops: supervisord is running
    (not shutting down) and so is the receiver. Then the stage is stopped alone, for a restart (or
    until someone starts it again); otherwise everything stops (shutdown, ``stop all``, no supervisord)."""
    state = call(run_dir, "getState")
    if not isinstance(state, dict) or state.get("statename") != "RUNNING":
        return False
    receiver = call(run_dir, "getProcessInfo", "receiver")
    return isinstance(receiver, dict) and receiver.get("statename") == "RUNNING"
