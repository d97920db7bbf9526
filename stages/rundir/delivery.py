"""Which flushes every sink is done with, told back to the shard that sent them, through the run directory.

A fleet-tier shard commits its Kafka offsets only once the interval read from them is delivered,
so that a crash re-reads what was not: it sends its flushes with ``ack`` set, and the forwarder
records each such flush here once every sink is done with it. The file,
``delivered-aggregator-K.json``, holds the forwarder instance (its pid and start time: a new one
has none of the last one's flushes), the shard's flush epoch and the seqs done lately. A shard that
finds the forwarder changed and a flush of its not done sends that flush again.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from stages.common.process_names import AGGREGATOR, process_name
from stages.rundir.figures import STARTED
from stages.rundir.private_file import read_private, write_private

log = logging.getLogger(__name__)

#: Seqs kept per shard: far more than a shard has waiting at once.
KEPT_SEQS = 512


def delivered_path(run_dir: Path, shard: int) -> Path:
    return run_dir / f"delivered-{process_name(AGGREGATOR, shard)}.json"


@dataclass
class Delivered:
    """What the file says: the forwarder that wrote it, the shard's epoch and its seqs done."""

    forwarder: str
    epoch: int = 0
    seqs: set[int] = field(default_factory=set)


def forwarder_identity(pid: int) -> str:
    return f"{pid}@{STARTED}"


def read_delivered(run_dir: Path, shard: int) -> Delivered | None:
    """None while no forwarder has written one (or it cannot be read)."""
    try:
        raw = json.loads(read_private(delivered_path(run_dir, shard)))
        return Delivered(str(raw["forwarder"]), int(raw["epoch"]), {int(s) for s in raw["seqs"]})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("Cannot read %s (%s): taken as nothing delivered", delivered_path(run_dir, shard), exc)
        return None


class DeliveryRecorder:
    """The forwarder's side: records each acked flush once every sink is done with it (any thread)."""

    def __init__(self, run_dir: Path, identity: str) -> None:
        self.run_dir = run_dir
        self.identity = identity
        self.lock = threading.Lock()
        #: shard → (epoch, seqs done, oldest first)
        self.done: dict[int, tuple[int, list[int]]] = {}

    def announce(self, shards: list[int]) -> None:
        """At the start: tell each shard this forwarder has none of its flushes yet."""
        for shard in shards:
            self._write(shard, 0, [])

    def record(self, shard: int, epoch: int, seq: int) -> None:
        with self.lock:
            known_epoch, seqs = self.done.get(shard, (epoch, []))
            if known_epoch != epoch:
                seqs = []
            seqs.append(seq)
            del seqs[:-KEPT_SEQS]
            self.done[shard] = (epoch, seqs)
            self._write(shard, epoch, seqs)

    def _write(self, shard: int, epoch: int, seqs: list[int]) -> None:
        data = json.dumps({"forwarder": self.identity, "epoch": epoch, "seqs": seqs}).encode()
        try:
            write_private(delivered_path(self.run_dir, shard), data)
        except OSError as exc:
            log.error("Cannot record delivered flushes of shard %d (%s): it re-reads them after a restart",
                      shard, exc.strerror)
