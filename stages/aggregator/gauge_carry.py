"""Gauge values carried across a reshard, from the retiring ring's shards to the new ring's.

A gauge is reported every interval until it expires, whether or not it was updated. Across
``pystatsd reshard`` the new ring's shards start without the values the old ring held, so each
retiring shard, once it has flushed the last interval it owns (the one before the switch), writes
its gauges to ``gauges-shard-K-of-M-from-J-of-N.msgpack``: one file per new shard K with the gauges
whose names the new ring gives it (empty when there are none: the file says shard J has carried).
The new shard takes every such file before it closes an interval and adopts a value only for a
gauge it has not heard of since the switch: it becomes the base that the deltas already received
apply to (they are applied when the interval closes), and a value set since the switch is newer and
stays. It closes its ring's first interval only once every retiring shard has carried (the ring file
says how many there were), or :data:`CARRY_WAIT_SECS` after that interval was due: a retiring shard
that a busy machine slowed past the interval would otherwise leave its gauges out of it.

The file is a msgpack map ``{"kind": "pystatsd.gauges.v1", "gauges": [[key, value, index of the
last interval that changed it], ...]}``, since v1.1 with ``"expire_for": {key: idle intervals}`` for
the gauges a rule gave a ttl (left out when none; a reader without it keeps the default expiry),
written by a shard of one release and read by a shard of the next when an upgrade and a reshard
meet. Within v1 keys may only be added, each with a default, and each addition gets a golden file
of its own (tests/data/rundir/gauges.v1*.bin): the writer produces the newest bytes and the reader
keeps reading every older file. Any other change is a new kind (``pystatsd.gauges.v2``), read beside
v1 for one release.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import msgpack

from stages.aggregator.series import Gauges
from stages.common.model import series_name
from stages.common.sharding import shard_for
from stages.rundir.private_file import read_private, write_private
from stages.rundir.ring import Ring

log = logging.getLogger(__name__)

GAUGES_V1 = "pystatsd.gauges.v1"
#: How long past its due time a new ring's shard holds its first interval for a retiring shard's gauges.
#: A retiring shard carries them a moment after the switch, or at its stop, which ``pystatsd reshard``
#: asks a second later; one that has not by then has crashed or is stalled, and its gauges come back
#: with their next update.
CARRY_WAIT_SECS = 5.0
_CARRIED_FROM = re.compile(r"-from-(\d+)-of-\d+\.msgpack$")


def carry_path(run_dir: Path, shard: int, shards: int, from_shard: int, from_shards: int) -> Path:
    return run_dir / f"gauges-shard-{shard}-of-{shards}-from-{from_shard}-of-{from_shards}.msgpack"


def next_ring(ring: Ring | None, shards: int, started: float) -> Ring | None:
    """The ring (as the run directory's file says it) that takes over the names of a shard of ``shards``
    started at ``started`` (unix time), or None. A ring file older than the shard is not its retirement:
    a new ring's shards start before ``pystatsd reshard`` writes their ring."""
    if ring is None or ring.shards == shards or ring.since <= started:
        return None
    return ring


def write_carried(run_dir: Path, gauges: Gauges, from_shard: int, from_shards: int, shards: int) -> int:
    """Split ``gauges`` by the new ring's shard of each name, one file per new shard; the gauges written."""
    split: dict[int, list[list[Any]]] = {shard: [] for shard in range(shards)}
    expiry: dict[int, dict[str, int]] = {shard: {} for shard in range(shards)}
    for key, (value, seen) in gauges.values.items():
        shard = shard_for(series_name(key), shards)
        split[shard].append([key, value, seen])
        if key in gauges.expire_for:
            expiry[shard][key] = gauges.expire_for[key]
    for shard, carried in split.items():
        write_private(carry_path(run_dir, shard, shards, from_shard, from_shards),
                      encode_carried(carried, expiry[shard]), durable=True)
    return len(gauges.values)


def take_carried(run_dir: Path, gauges: Gauges, shard: int, shards: int) -> tuple[int, set[int]]:
    """Adopt (and remove) every file carried to this shard: the gauges adopted, and the retiring shards
    whose files these were. An unreadable file is logged and removed: its gauges reappear with their
    next update (and its shard counts as carried: it has nothing more to send)."""
    adopted = 0
    carried_by: set[int] = set()
    for path in sorted(run_dir.glob(f"gauges-shard-{shard}-of-{shards}-from-*.msgpack")):
        named = _CARRIED_FROM.search(path.name)
        if named:
            carried_by.add(int(named.group(1)))
        try:
            data = read_private(path)
            path.unlink()
            carried, expiry = decode_carried(data)
            for key, value, seen in carried:
                if key not in gauges.values:
                    admitted = gauges.admit(key)
                    if admitted is not None and admitted not in gauges.values:
                        gauges.values[admitted] = [float(value), int(seen)]
                        if admitted in expiry:
                            gauges.expire_for[admitted] = expiry[admitted]
                        adopted += 1
        except (OSError, ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            path.unlink(missing_ok=True)
            log.error("Dropped the gauges carried in %s (%s): they reappear with their next update", path, exc)
    return adopted, carried_by


def encode_carried(carried: list[list[Any]], expire_for: dict[str, int] | None = None) -> bytes:
    """One carry file's bytes: ``carried`` is [key, value, index of the last interval that changed it] per
    gauge, ``expire_for`` the idle intervals of those a rule gave a ttl (v1.1; left out when empty)."""
    fields: dict[str, Any] = {"kind": GAUGES_V1, "gauges": carried}
    if expire_for:
        fields["expire_for"] = expire_for
    return bytes(msgpack.packb(fields, use_bin_type=True))


def decode_carried(data: bytes) -> tuple[list[list[Any]], dict[str, int]]:
    """The gauges of a carry file and their ``expire_for`` (as :func:`encode_carried` took them; empty in a
    v1 file without it); ValueError (or msgpack's) when it is not a ``pystatsd.gauges.v1`` file."""
    raw = msgpack.unpackb(data, raw=False)
    if not isinstance(raw, dict) or raw.get("kind") != GAUGES_V1:
        raise ValueError("not a pystatsd.gauges.v1 file")
    return [list(entry) for entry in raw["gauges"]], {str(k): int(n) for k, n in raw.get("expire_for", {}).items()}
