"""Which shard owns a metric, and where each stage's socket lives."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

#: Unix socket paths longer than this fail to bind (sun_path is 108 bytes with the terminator).
MAX_IPC_PATH = 100


def shard_for(name: str, shard_count: int) -> int:
    """The shard that owns every series of ``name``: stable across processes and restarts."""
    return zlib.crc32(name.encode("utf-8", "surrogatepass")) % shard_count


def _ipc(path: Path) -> str:
    text = str(path)
    if len(text) > MAX_IPC_PATH:
        raise ValueError(f"run_dir: socket path {text!r} is longer than {MAX_IPC_PATH} characters")
    return f"ipc://{text}"


def shard_endpoint(run_dir: os.PathLike[str] | str, shard: int, shards: int) -> str:
    """Shard K of a ring of N: two rings run side by side while a reshard switches between them."""
    return _ipc(Path(run_dir) / f"shard-{shard}-of-{shards}.sock")


def forwarder_endpoint(run_dir: os.PathLike[str] | str) -> str:
    return _ipc(Path(run_dir) / "forwarder.sock")
