"""What a sink tells its encoder beyond the aggregates."""

from __future__ import annotations

from dataclasses import dataclass

from stages.common.config import Secret


@dataclass(frozen=True)
class EncoderOptions:
    apikey: Secret | None = None
    tenant_id: str | None = None
    include_apikey: bool = True
    cumulative_traces: bool = False
