"""shard_for: CRC-32 of the UTF-8 name modulo the shard count, the same in every process."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import pytest

from stages.common.sharding import shard_for

# name -> (crc32 of its UTF-8 bytes, shard of 4, shard of 8), worked out once with zlib.crc32.
KNOWN = {
    "api.hits": (4291482535, 3, 7),
    "api.users": (4033359709, 1, 5),
    "cfbroker.latency": (2918022138, 2, 2),
    "café.orders": (2526910718, 2, 6),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_shard_is_crc32_of_the_utf8_name_modulo_the_count(name: str) -> None:
    crc, of_4, of_8 = KNOWN[name]
    assert zlib.crc32(name.encode("utf-8")) == crc
    assert (shard_for(name, 4), shard_for(name, 8)) == (of_4, of_8)
    assert (crc % 4, crc % 8) == (of_4, of_8)


def test_one_shard_takes_every_name() -> None:
    assert {shard_for(name, 1) for name in KNOWN} == {0}


def test_shard_does_not_depend_on_the_hash_seed() -> None:
    # Receivers in different processes must agree on a name's shard; hash() would not.
    program = f"from stages.common.sharding import shard_for; print([shard_for(n, 8) for n in {sorted(KNOWN)!r}])"
    expected = str([KNOWN[name][2] for name in sorted(KNOWN)])
    for seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                                env={**os.environ, "PYTHONHASHSEED": seed})
        assert result.stdout.strip() == expected
