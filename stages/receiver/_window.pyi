# The types of window.c's module, for the type checker: the same interface as window.py's PyWindow.

from stages.common.model import Sample, Tags
from stages.receiver.identity import Rules
from stages.receiver.window import Batch, LineParser

class Window:
    def __init__(self, shards: int, defaults: Tags, parse_lines: LineParser, rules: Rules | None = None,
                 cache_size: int = ..., keep_container_id: bool = ..., /) -> None: ...
    # Read-only: getters of the C type.
    metrics: int
    entries: int
    shard_metrics: list[int]
    fallbacks: int
    rule_dropped: int
    tallies: list[int]
    def feed(self, payloads: list[bytes], start: int, bad: dict[str, int], /) -> int: ...
    def add(self, sample: Sample, /) -> None: ...
    def add_own(self, sample: Sample, /) -> None: ...
    def take(self, max_entries: int, /) -> list[list[Batch]]: ...
