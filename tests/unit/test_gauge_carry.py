"""Gauges carried across a reshard: each new shard gets exactly its names, adopts what it has not heard of since."""

from __future__ import annotations

from pathlib import Path

from stages.aggregator.gauge_carry import carry_path, next_ring, take_carried, write_carried
from stages.aggregator.series import Gauges, SeriesLimit
from stages.common.model import series_key, series_name
from stages.common.sharding import shard_for
from stages.rundir.ring import RING_FILE, Ring, read_ring, write_ring


def gauges(values: dict[str, float], seen: int = 7) -> Gauges:
    table = Gauges(30, SeriesLimit(1000, ()))
    for key, value in values.items():
        table.values[table.limit.admit(key)] = [value, seen]
    return table


OLD = {series_key(f"g{i}", ("host", "h1")): float(i) for i in range(12)}


def test_each_new_shard_adopts_exactly_the_gauges_of_its_names(tmp_path: Path) -> None:
    assert write_carried(tmp_path, gauges(OLD), from_shard=1, from_shards=2, shards=3) == 12
    for shard in range(3):
        new = gauges({})
        mine = {key: value for key, value in OLD.items() if shard_for(series_name(key), 3) == shard}
        assert take_carried(tmp_path, new, shard, 3) == (len(mine), {1})
        assert new.values == {key: [value, 7] for key, value in mine.items()}
        assert not carry_path(tmp_path, shard, 3, 1, 2).exists()
    assert take_carried(tmp_path, gauges({}), 0, 3) == (0, set())  # taken once


def test_a_retiring_shard_with_no_gauges_for_a_new_shard_still_says_it_carried(tmp_path: Path) -> None:
    # The new shard waits for every retiring shard's file before it closes its ring's first interval.
    write_carried(tmp_path, gauges({}), from_shard=0, from_shards=2, shards=3)
    write_carried(tmp_path, gauges(OLD), from_shard=1, from_shards=2, shards=3)
    assert take_carried(tmp_path, gauges({}), 2, 3)[1] == {0, 1}


def test_a_value_set_since_the_switch_stays_and_deltas_apply_on_the_carried_base(tmp_path: Path) -> None:
    set_anew, delta_only = [key for key in OLD if shard_for(series_name(key), 2) == 0][:2]
    write_carried(tmp_path, gauges(OLD), from_shard=0, from_shards=4, shards=2)
    new = gauges({set_anew: 99.0}, seen=8)
    take_carried(tmp_path, new, 0, 2)
    assert new.values[set_anew] == [99.0, 8]
    new.apply({delta_only: [False, 5.0]}, 8)  # a delta received since the switch, applied at the close
    assert new.values[delta_only] == [OLD[delta_only] + 5.0, 8]


def test_an_unreadable_file_is_removed_and_adopts_nothing(tmp_path: Path) -> None:
    path = carry_path(tmp_path, 0, 2, 0, 4)
    path.write_bytes(b"\x93not ours")
    new = gauges({})
    assert take_carried(tmp_path, new, 0, 2) == (0, {0})
    assert new.values == {} and not path.exists()


def test_only_a_ring_written_after_the_shard_started_retires_it(tmp_path: Path) -> None:
    assert next_ring(read_ring(tmp_path), 2, started=100.0) is None  # no ring file
    write_ring(tmp_path, Ring(2, 110.0))
    assert next_ring(read_ring(tmp_path), 2, started=100.0) is None  # its own ring
    write_ring(tmp_path, Ring(4, 90.0))
    # A new ring's shard starts before its ring is written: the old ring's file is not its retirement.
    assert next_ring(read_ring(tmp_path), 2, started=100.0) is None
    write_ring(tmp_path, Ring(4, 110.0))
    assert next_ring(read_ring(tmp_path), 2, started=100.0) == Ring(4, 110.0)


def test_the_ring_file_says_the_ring_it_replaced_and_one_without_reads_as_unknown(tmp_path: Path) -> None:
    write_ring(tmp_path, Ring(4, 110.0, previous=2))
    assert read_ring(tmp_path) == Ring(4, 110.0, 2)
    (tmp_path / RING_FILE).write_text('{"shards": 4, "from": 110.0}')  # an older release's
    assert read_ring(tmp_path) == Ring(4, 110.0, None)


def test_a_gauge_s_ttl_goes_with_it_to_the_new_ring(tmp_path: Path) -> None:
    old = gauges(OLD)
    ruled = {key: 3 for key in list(OLD)[::3]}  # the idle intervals a rule's ttl gave some of them
    old.expire_for.update(ruled)
    write_carried(tmp_path, old, from_shard=1, from_shards=2, shards=3)
    for shard in range(3):
        new = gauges({})
        take_carried(tmp_path, new, shard, 3)
        assert new.expire_for == {key: n for key, n in ruled.items() if shard_for(series_name(key), 3) == shard}
        # the ruled ones are forgotten after 3 idle intervals, the others at the default's 30
        assert {a["name"] for a in new.aggregates(7 + 3, 0.0, 10.0)} == {
            series_name(key) for key in new.values if key not in ruled}
