"""The mergeable summaries a partial carries past its exact bound: DDSketch for values, HyperLogLog for sets.

Values: DataDog's ``ddsketch`` (pure Python, maintained by DataDog, the reference implementation of
the DDSketch paper). It was chosen over a t-digest or KLL because its error is *relative to the
value*: every quantile it reports is within :data:`RELATIVE_ACCURACY` (1 %) of the true value of that
rank, whatever the distribution, and merging sketches loses nothing beyond that. That is a bound a
user can state on a dashboard ("p99 within 1 %"), where a t-digest's error depends on the data.

Sets: Apache DataSketches' HLL (``datasketches``, the Apache project's C++ core with Python
bindings), lg_k 12: about 1.6 % standard error, 4 KiB a sketch; unions of sketches are exact unions
of what they saw.

The wire form is ours, a msgpack array, because ``ddsketch`` serializes only through protobuf (a
dependency of its own): the mapping's accuracy, the zero count, the count, sum, min and max, and
each store's offset and bins. Reading it back fills the library's own stores through their ``add``.
"""

from __future__ import annotations

from typing import Any, cast

import msgpack
from datasketches import hll_sketch, hll_union
from ddsketch import DDSketch

#: DDSketch's relative accuracy: each quantile within 1 % of the value at its rank.
RELATIVE_ACCURACY = 0.01
#: HyperLogLog size (log2 of its buckets): 2^12 buckets, about 1.6 % standard error.
HLL_LG_K = 12


def new_sketch() -> DDSketch:
    return DDSketch(RELATIVE_ACCURACY)


def sketch_of(values: Any, weight: float) -> DDSketch:
    """A sketch of ``values``, each standing for ``weight`` metrics (a sampled timer's 1 / rate)."""
    sketch = new_sketch()
    add = sketch.add
    for value in values:
        add(value, weight)
    return sketch


def _store(store: Any) -> list[Any]:
    return [store.offset, list(store.bins)]


def sketch_bytes(sketch: DDSketch) -> bytes:
    # The library keeps these as attributes without accessors; its own protobuf encoder reads the same.
    fields = [RELATIVE_ACCURACY, sketch._zero_count, sketch._count, sketch._sum, sketch._min, sketch._max,
              _store(sketch._store), _store(sketch._negative_store)]
    return cast(bytes, msgpack.packb(fields, use_bin_type=True))


def sketch_from_bytes(data: bytes) -> DDSketch:
    """ValueError when ``data`` is not a sketch of this accuracy."""
    try:
        accuracy, zero, count, total, low, high, positive, negative = msgpack.unpackb(data)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a sketch ({exc})") from None
    if accuracy != RELATIVE_ACCURACY:
        raise ValueError(f"a sketch of accuracy {accuracy}, not {RELATIVE_ACCURACY}")
    sketch = new_sketch()
    for store, (offset, bins) in ((sketch._store, positive), (sketch._negative_store, negative)):
        for i, weight in enumerate(bins):
            if weight:
                store.add(offset + i, weight)
    sketch._zero_count, sketch._count, sketch._sum, sketch._min, sketch._max = zero, count, total, low, high
    return sketch


def quantile(sketch: DDSketch, pct: float) -> float:
    value = sketch.get_quantile_value(pct / 100)
    return float(value) if value is not None else 0.0


def hll_of(members: Any) -> hll_sketch:
    sketch = hll_sketch(HLL_LG_K)
    for member in members:
        sketch.update(member)
    return sketch


def hll_bytes(sketch: hll_sketch) -> bytes:
    return bytes(sketch.serialize_compact())


def hll_from_bytes(data: bytes) -> hll_sketch:
    """ValueError when ``data`` is not a serialized HLL sketch."""
    try:
        return hll_sketch.deserialize(data)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"not an HLL sketch ({exc})") from None


def hll_union_of(sketches: list[hll_sketch]) -> hll_sketch:
    union = hll_union(HLL_LG_K)
    for sketch in sketches:
        union.update(sketch)
    return union.get_result()


def at_most(sketch: DDSketch, bound: float) -> float:
    """The weight of the values ``sketch`` saw that are at most ``bound``, read from its bins: the bin
    that holds the bound counts whole, so a value up to one bin's width (2 %, twice the relative
    accuracy) beyond the bound may be counted in it; every other value is on its right side."""
    mapping = sketch._mapping

    def weight(store: Any, wanted: Any) -> float:
        return float(sum(w for i, w in enumerate(store.bins) if w and wanted(store.offset + i)))

    if bound < 0:
        if -bound < mapping.min_possible:
            return float(sketch._negative_store.count)
        key = mapping.key(-bound)
        return weight(sketch._negative_store, lambda k: k >= key)
    below = float(sketch._negative_store.count + sketch._zero_count)
    if bound < mapping.min_possible:
        return below
    key = mapping.key(bound)
    return below + weight(sketch._store, lambda k: k <= key)
