"""The pipeline's own aggregate object as compact JSON, one object per record."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from stages.forwarder.encoders.options import EncoderOptions


class JsonEncoder:
    def __init__(self, options: EncoderOptions) -> None:
        self.options = options

    def encode(self, aggregate: dict[str, Any]) -> Iterable[bytes]:
        # allow_nan=False: a non-finite value would be invalid JSON; the parsers never let one in.
        yield json.dumps(aggregate, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
