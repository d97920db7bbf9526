# The types of bucket.c's module, for the type checker: its contents() are IntervalBucket's tables.

from collections.abc import Callable
from typing import Any

from stages.aggregator.series import SeriesKey

class Bucket:
    def __init__(self, admit: Callable[[SeriesKey], SeriesKey], /) -> None: ...
    def merge(self, body: bytes, entry_metrics: bytes = ..., /) -> None: ...
    def contents(self) -> tuple[dict[SeriesKey, float], dict[SeriesKey, list[Any]],
                                dict[int, dict[SeriesKey, list[Any]]], dict[SeriesKey, set[str]],
                                dict[SeriesKey, float]]: ...
    def series_metrics(self) -> dict[SeriesKey, int]: ...
