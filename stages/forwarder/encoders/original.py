"""The original pystatsd's Kafka message: a flat Logstash-style JSON event per value.

``{"name", "value", "@version": "1", "@timestamp": "YYYY-MM-DDTHH:MM:SS.mmmZ", "apikey", "tenant_id",
<every tag as a top-level key>}``. A timer, histogram or distribution becomes one event per
statistic named ``<name>.<stat>`` (``user.latency.p90``). Whole values are written as integers, as
the original wrote its counts, so a consumer's field types do not change. With ``cumulative_traces`` a trace carries
its count since this forwarder started, as the original did; otherwise the interval's count.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from stages.common.model import whole
from stages.forwarder.encoders.base import RecordEncoder
from stages.forwarder.encoders.json import json_bytes
from stages.forwarder.encoders.options import EncoderOptions

#: Keys of the event itself; a tag of the same name is left out rather than overwrite one.
EVENT_KEYS = frozenset({"name", "value", "@version", "@timestamp", "apikey", "tenant_id"})


def logstash_timestamp(unix_seconds: float) -> str:
    whole = int(unix_seconds)
    millis = int(round((unix_seconds - whole) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class OriginalEncoder(RecordEncoder):
    def __init__(self, options: EncoderOptions) -> None:
        super().__init__(options)
        #: (name, sorted tags) → trace count since start, for cumulative_traces.
        self.trace_totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def encode(self, aggregate: dict[str, Any]) -> Iterable[bytes]:
        base: dict[str, Any] = {k: v for k, v in aggregate["tags"].items() if k not in EVENT_KEYS}
        base["@version"] = "1"
        base["@timestamp"] = logstash_timestamp(aggregate["timestamp"])
        if self.options.include_apikey and self.options.apikey is not None:
            base["apikey"] = self.options.apikey.reveal()
        if self.options.tenant_id is not None:
            base["tenant_id"] = self.options.tenant_id
        name = aggregate["name"]
        if "stats" in aggregate:
            for stat, value in aggregate["stats"].items():
                yield json_bytes({**base, "name": f"{name}.{stat}", "value": whole(value)})
            return
        value = aggregate["value"]
        if aggregate["type"] == "trace" and self.options.cumulative_traces:
            key = (name, tuple(sorted(aggregate["tags"].items())))
            value = self.trace_totals[key] = self.trace_totals.get(key, 0.0) + value
        yield json_bytes({**base, "name": name, "value": whole(value)})
