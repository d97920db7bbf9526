"""Which bucket bounds a timer, histogram or distribution is counted into: ``histogram_buckets``.

The first entry whose name glob matches the series' name gives its bounds; a name no entry matches
gets none (its aggregate carries no ``buckets``). Asked once per name and kept: a flush asks for every
timer-like series, most of them of a few names.
"""

from __future__ import annotations

from typing import Any

from stages.aggregator.stats import bucket_counts
from stages.common.config import HistogramBuckets
from stages.common.name_glob import compile_name_glob

#: Names whose answer is kept; past it the answers are forgotten and asked again.
KEPT_NAMES = 100_000


class BucketBounds:
    def __init__(self, entries: list[HistogramBuckets]) -> None:
        self.entries: list[tuple[Any, list[float]]] = [(compile_name_glob(e.match), list(e.buckets))
                                                       for e in entries]
        self._answers: dict[str, list[float] | None] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def of(self, name: str) -> list[float] | None:
        """The bounds of ``name``'s series (one list per entry, shared: never to be changed), or None."""
        try:
            return self._answers[name]
        except KeyError:
            pass
        bounds = next((b for pattern, b in self.entries if pattern.match(name)), None)
        if len(self._answers) >= KEPT_NAMES:
            self._answers.clear()
        self._answers[name] = bounds
        return bounds


def bucket_fields(values: list[float], count: float, bounds: list[float] | None) -> dict[str, Any] | None:
    """An aggregate's ``buckets`` of its sorted ``values`` (``le``: the bounds; ``counts``: cumulative,
    one more for ``+Inf``, see :func:`stages.aggregator.stats.bucket_counts`), or None without bounds."""
    if bounds is None:
        return None
    return {"le": bounds, "counts": bucket_counts(values, count, bounds)}
