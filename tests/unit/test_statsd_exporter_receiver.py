"""A statsd_exporter mapping file in the receiver's seam (stages.receiver.identity): lines parsed by the real
receiver, its mapping_config read relative to the config file, their series renamed, tagged, dropped or
left as sent before they are batched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from harness.ports import free_ports
from stages.common import contract
from stages.common.config import Config
from stages.common.model import Tags, split_series_key
from stages.receiver import receiver_loop

pytestmark = pytest.mark.serverless

MAPPING = """
mappings:
- match: api.*.*.hits
  name: api_hits
  honor_labels: true
  labels: {host: "$1", method: "$2", source: mapping}
- match: debug.*
  action: drop
  name: dropped
- match: "db\\\\.(\\\\w+)"
  match_type: regex
  name: db_calls
  labels: {table: "$1"}
"""


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[receiver_loop.Receiver]:
    (tmp_path / "mapping.yml").write_text(MAPPING)
    config_file = tmp_path / "pystatsd.yaml"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    (port,) = free_ports(1)
    made_receiver = receiver_loop.Receiver(Config(bind_port=port, self_metrics_prefix="", mapping_config="mapping.yml"),
                                           1, ctx, tmp_path, "receiver", config_file=config_file)
    yield made_receiver
    for listener in made_receiver.listeners:
        listener.close()
    ctx.destroy(linger=0)


def test_lines_are_mapped_before_they_are_batched(receiver: receiver_loop.Receiver) -> None:
    receiver.receive([
        b"api.h-1.get.hits:2|c|#source:client\napi.h-1.get.hits:3|c|#source:client",
        b"api.h2.get.hits:1|c\ndebug.a:7|c\ndebug.b:1|ms",
        b"xdb.users:4|c\nplain.name:5|c|#env:test\ndb.users:1|s",
    ])
    assert (receiver.metrics, receiver.rule_dropped) == (6, 2)
    counters: dict[tuple[str, Tags], float] = {}
    sets: list[tuple[str, Tags]] = []
    for batches in receiver.batcher.window.take(1000):
        for body, *_ in batches:
            decoded = contract.decode_batch_body(body)
            counters.update({split_series_key(key): value
                             for key, value in zip(decoded.counters[::2], decoded.counters[1::2], strict=True)})
            sets += [split_series_key(key) for key in decoded.sets[::2]]
    assert counters == {
        ("api_hits", ("host", "h-1", "method", "get", "source", "client")): 5.0,
        ("api_hits", ("host", "h2", "method", "get", "source", "mapping")): 1.0,
        ("db_calls", ("table", "users")): 4.0,
        ("plain.name", ("env", "test")): 5.0,
    }
    # a set is not mapped: statsd_exporter refuses sets before its mapper sees them
    assert sets == [("db.users", ())]
