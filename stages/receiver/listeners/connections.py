"""The receiver's rules for stream connections (how long one may idle, how many one peer may hold)
and what enforcing them counted: one object shared by every stream listener of a receiver."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class StreamConnections:
    #: Seconds a connection may send nothing before it is closed; 0: never.
    idle_timeout: float
    #: Connections one peer (a TCP source address, a Unix socket's user) may hold at once; 0: no cap.
    max_per_peer: int
    #: Connections open now, over every stream listener.
    open: int = 0
    #: reason → new connections closed unread because no room could be made for them.
    refused: dict[str, int] = dataclasses.field(default_factory=dict)
    #: reason → open connections the receiver closed (idle too long, or to make room for a new one).
    closed: dict[str, int] = dataclasses.field(default_factory=dict)

    def count_refused(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def count_closed(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
