"""The samples a receiver holds before they leave: repeats counted, gauges kept in arrival order.

Most traffic repeats itself within a batch window (the same counter line thousands of times a
second), so the window counts each distinct sample instead of keeping every copy: counting runs
in C (:class:`collections.Counter`), and the batch a shard gets carries each distinct sample once.
Only gauges need their order (a later value replaces an earlier one), so they are kept as a list.
"""

from __future__ import annotations

from collections import Counter, _count_elements  # type: ignore[attr-defined]
from itertools import compress
from operator import itemgetter, not_

from stages.model import MetricType, Sample

#: Types whose samples must reach the shard in the order they came.
ORDERED_TYPES = frozenset({int(MetricType.GAUGE), int(MetricType.GAUGE_DELTA)})
_TYPE = itemgetter(1)


class Tally:
    __slots__ = ("counts", "ordered", "metrics")

    def __init__(self) -> None:
        #: distinct order-free sample → how many times it came
        self.counts: Counter[Sample] = Counter()
        self.ordered: list[Sample] = []
        #: samples taken in, repeats included
        self.metrics = 0

    def add(self, samples: list[Sample]) -> None:
        # Sorted apart in C (compress over the types), not sample by sample in Python.
        in_order = list(map(ORDERED_TYPES.__contains__, map(_TYPE, samples)))
        if True in in_order:
            self.ordered.extend(compress(samples, in_order))
            _count_elements(self.counts, compress(samples, map(not_, in_order)))
        else:
            _count_elements(self.counts, samples)
        self.metrics += len(samples)

    def add_counted(self, samples: list[Sample]) -> None:
        """Take samples the caller knows are all order-free."""
        # Counter.update's C loop without its Python preamble, which costs more than a small burst.
        _count_elements(self.counts, samples)
        self.metrics += len(samples)

    def entries(self) -> int:
        """Distinct entries held: what the batches made from this tally will carry."""
        return len(self.counts) + len(self.ordered)

    def __bool__(self) -> bool:
        return self.metrics > 0
