"""The busiest names of a closed interval, for ``pystatsd top``: what the shard already holds, summed by name.

Nothing is counted on the hot path for it: at the flush, the interval's tables (the bucket, closed)
are summed by name once. A name's *rate* is the metrics a second its series stand for, as far as the
tables know them: a timer's, histogram's or distribution's samples and a trace's count (the sum of
1 / sample rate: exact), a counter's counted total (a counter stands for the sum of what clients
counted, so it is the metrics a second where they count by 1, the common case), a set's members and a
gauge's one value per series (at least one metric each). Its *series* are those it had in the
interval, its *folded* the series ``series_limit_per_name`` folded into its overflow series. Each
list is bounded: the :data:`TOP` names by rate, by series and by folded series, and for each tag key a
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
    per_series: dict[str, float] = dict(bucket.counters)
    for of_type in bucket.sampled.values():
        for key, (_, count) in of_type.items():
            per_series[key] = per_series.get(key, 0.0) + count
    for key, members in bucket.sets.items():
        per_series[key] = per_series.get(key, 0.0) + len(members)
    for key, count in bucket.traces.items():
        per_series[key] = per_series.get(key, 0.0) + count
    for key in bucket.gauge_changes:
        per_series[key] = per_series.get(key, 0.0) + 1
    if own_prefix:
        per_series = {key: count for key, count in per_series.items() if not key.startswith(own_prefix)}
    names: dict[str, list[float]] = {}
    for key, count in per_series.items():
        name = key.partition(KEY_SEPARATOR)[0]
        total = names.get(name)
        if total is None:
            names[name] = [abs(count), 1]
        else:
            total[0] += abs(count)
            total[1] += 1
    chosen = set(heapq.nlargest(TOP, names, key=lambda n: names[n][0]))
    chosen |= set(heapq.nlargest(TOP, names, key=lambda n: names[n][1]))
    chosen |= set(heapq.nlargest(TOP, folded, key=folded.__getitem__))
    name_figures: list[NameFigure] = [
        {"name": name, "rate": round(names[name][0] / interval, 3) if name in names else 0.0,
         "series": int(names[name][1]) if name in names else 0, "folded": folded.get(name, 0)}
        for name in sorted(chosen, key=lambda n: -names.get(n, [0.0])[0])]
    tag_figures = {key: by_tag(per_series, key, interval) for key in tag_keys}
    return {"interval": interval, "series_limit": series_limit, "names": name_figures, "tags": tag_figures}


def by_tag(per_series: dict[str, float], tag_key: str, interval: float) -> list[TagValueFigure]:
    """The busiest values of ``tag_key`` among ``per_series`` (series key → metrics in the interval)."""
    values: dict[str, list[float]] = {}
    for key, count in per_series.items():
        flat = key.split(KEY_SEPARATOR)
        for i in range(1, len(flat) - 1, 2):
            if flat[i] == tag_key:
                total = values.setdefault(flat[i + 1], [0.0, 0])
                total[0] += abs(count)
                total[1] += 1
                break
    top_values = heapq.nlargest(TOP, values.items(), key=lambda item: item[1][0])
    return [{"value": value, "rate": round(rate / interval, 3), "series": int(series)}
            for value, (rate, series) in top_values]


def empty_busiest(interval: float, series_limit: int) -> BusiestFigures:
    """An interval of nothing."""
    return {"interval": interval, "series_limit": series_limit, "names": [], "tags": {}}
