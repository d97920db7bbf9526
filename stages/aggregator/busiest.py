"""The busiest names of a closed interval, for ``pystatsd top``: what the shard already holds, summed by name.

A name's *rate* is the metrics a second it received: each series' metrics as the bucket counted them
(``IntervalBucket.series_metrics``: one per value a client sent, whatever its type and sample rate, as
``pystatsd status`` counts metrics: a counter's ``x:5|c`` is one, a gauge's every line one, a set's
every member sent one, repeated or not), summed over the name's series and divided by the interval.
Its *series* are those it had in the interval, its *folded* the series ``series_limit_per_name``
folded into its overflow series. Nothing else is counted on the hot path for it (one integer per
series there), and this summing by name runs at the flush only while a top asks. Each list is
bounded: the :data:`TOP` names by rate, by series and by folded series, and for each tag key a
running top asks for (:mod:`stages.rundir.top_request`; splitting every series key costs, so only then)
the :data:`TOP` values by rate, so the figures stay small however many names.
"""

from __future__ import annotations

import heapq

from stages.aggregator.series import IntervalBucket
from stages.common.figure_schemas import BusiestFigures, NameFigure, TagValueFigure
from stages.common.model import KEY_SEPARATOR

#: Names (and values per tag key) a shard publishes per interval.
TOP = 20


def busiest(bucket: IntervalBucket, folded: dict[str, int], interval: float, series_limit: int,
            tag_keys: list[str], own_prefix: str = "") -> BusiestFigures:
    """The busiest names of ``bucket`` (closed), with the series ``folded`` per name, and the busiest values of
    each of ``tag_keys`` (what a running top asks for: stages.rundir.top_request); the daemon's own metrics
    (``own_prefix``) left out."""
    per_series: dict[str, int] = bucket.series_metrics
    if own_prefix:
        per_series = {key: count for key, count in per_series.items() if not key.startswith(own_prefix)}
    names: dict[str, list[int]] = {}
    for key, count in per_series.items():
        name = key.partition(KEY_SEPARATOR)[0]
        total = names.get(name)
        if total is None:
            names[name] = [count, 1]
        else:
            total[0] += count
            total[1] += 1
    chosen = set(heapq.nlargest(TOP, names, key=lambda n: names[n][0]))
    chosen |= set(heapq.nlargest(TOP, names, key=lambda n: names[n][1]))
    chosen |= set(heapq.nlargest(TOP, folded, key=folded.__getitem__))
    name_figures: list[NameFigure] = [
        {"name": name, "rate": round(names[name][0] / interval, 3) if name in names else 0.0,
         "series": names[name][1] if name in names else 0, "folded": folded.get(name, 0)}
        for name in sorted(chosen, key=lambda n: -names.get(n, [0])[0])]
    tag_figures = {key: by_tag(per_series, key, interval) for key in tag_keys}
    return {"interval": interval, "series_limit": series_limit, "names": name_figures, "tags": tag_figures}


def by_tag(per_series: dict[str, int], tag_key: str, interval: float) -> list[TagValueFigure]:
    """The busiest values of ``tag_key`` among ``per_series`` (series key → metrics in the interval)."""
    values: dict[str, list[int]] = {}
    for key, count in per_series.items():
        flat = key.split(KEY_SEPARATOR)
        for i in range(1, len(flat) - 1, 2):
            if flat[i] == tag_key:
                total = values.setdefault(flat[i + 1], [0, 0])
                total[0] += count
                total[1] += 1
                break
    top_values = heapq.nlargest(TOP, values.items(), key=lambda item: item[1][0])
    return [{"value": value, "rate": round(rate / interval, 3), "series": series}
            for value, (rate, series) in top_values]


def empty_busiest(interval: float, series_limit: int) -> BusiestFigures:
    """An interval of nothing."""
    return {"interval": interval, "series_limit": series_limit, "names": [], "tags": {}}
