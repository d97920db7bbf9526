"""InfluxDB line protocol: one line per series, measurement = name, tags = tags, timestamp in ns.

Fields: ``value`` (and ``rate`` for counters), or one field per statistic for timers, histograms and
distributions. Escaping follows the line protocol: commas and spaces in measurements; commas,
equals signs and spaces in tag keys, tag values and field keys. Tags with an empty value are left
out (InfluxDB refuses them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stages.forwarder.encoders.base import RecordEncoder

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\\": "\\\\"})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "\\\\"})


class InfluxEncoder(RecordEncoder):
    def encode(self, aggregate: dict[str, Any]) -> Iterable[bytes]:
        series = aggregate["name"].translate(_MEASUREMENT)
        for key in sorted(aggregate["tags"]):
            value = aggregate["tags"][key]
            if value:
                series += f",{key.translate(_KEY)}={value.translate(_KEY)}"
        if "stats" in aggregate:
            fields = aggregate["stats"]
        else:
            fields = {"value": aggregate["value"]}
            if "rate" in aggregate:
                fields["rate"] = aggregate["rate"]
        field_text = ",".join(f"{k.translate(_KEY)}={float(v)!r}" for k, v in fields.items())
        nanos = round(aggregate["timestamp"] * 1000) * 1_000_000
        yield f"{series} {field_text} {nanos}".encode()
