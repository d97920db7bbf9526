"""Each stage's published figures against their schema (stages.common.figure_schemas), and status reading
them through it."""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from stages.aggregator.busiest import busiest
from stages.aggregator.fleet.loop import FleetLoop
from stages.aggregator.series import IntervalBucket, SeriesLimit
from stages.aggregator.shard_loop import ShardLoop
from stages.common.figure_schemas import SCHEMAS, ForwarderFigures, figures_of, problems
from stages.common.strict import STRICT_ENV
from stages.control.status import _summary, health
from stages.forwarder.fanout import SinkRunner
from stages.forwarder.forwarder_loop import Forwarder
from stages.forwarder.sinks.base import BufferConfig
from stages.forwarder.sinks.file import FileConfig, FileSink
from stages.receiver.receiver_loop import Receiver
from stages.rundir.figures import FiguresNotAsDeclared, publish, read_all


def fake(**attributes: Any) -> Any:
    """A stand-in ``self`` with just the attributes a figures() method reads."""
    return cast(Any, SimpleNamespace(**attributes))


def receiver_figures() -> dict[str, Any]:
    receiver = fake(listeners=[fake(url="udp://127.0.0.1:8125")], datagrams=12, metrics=1500,
                    bad={"no_value": 2}, batcher=fake(dropped=[0, 3]), rule_dropped=5, rules=None,
                    streams=fake(open=2, refused={"peer_limit": 1}, closed={}),
                    relay=fake(destinations=[fake(name="127.0.0.1:8126", datagrams=3, dropped={"unreachable": 2})]))
    return dict(Receiver.figures(receiver, 4))


class Outbox(list[bytes]):
    """The flushes a shard holds, and how many it dropped."""

    dropped = 1


def shard_figures() -> dict[str, Any]:
    loop = fake(shard=0, state=fake(metrics=1500, gauges=fake(values={"g": 1.0})), outbox=Outbox([b"held"]),
                decode_errors=collections.Counter({"bad_header": 1}))
    bucket = IntervalBucket(SeriesLimit(10, ()), compiled=False)
    bucket.counters["hits\x1fregion\x1feu"] = 3.0
    return dict(ShardLoop.figures(loop, fake(count=3,
                                             busiest=busiest(bucket, {"hits": 1}, 10.0, 10, ["region"]))))


def fleet_figures() -> dict[str, Any]:
    loop = fake(shard=1, interval=2.0, hosts={5: {"a", "b"}, 6: {"a"}}, fleet=fake(kafka_topic="t", group="g"),
                parts={0: None, 3: None}, open={(0, 7): None}, intervals_closed=4, partials=10, duplicates=1,
                late_by_host=collections.Counter({"b": 2}), late_dropped=0, redelivered_skipped=0,
                bad_partials=collections.Counter(), pending=[])
    return dict(FleetLoop.figures(loop, {0: 5, 3: 0}))


def forwarder_figures(tmp_path: Path) -> dict[str, Any]:
    runner = SinkRunner(FileSink(FileConfig(path=str(tmp_path / "out.jsonl"))), BufferConfig())
    forwarder = fake(ledger=fake(lost_metrics={0: 3}), lost_flushes=0, bad_messages=0)
    return dict(Forwarder.figures(forwarder, {"file": runner.figures()}))


def test_every_publisher_s_figures_are_as_their_schema_declares(tmp_path: Path) -> None:
    published = {"receiver": receiver_figures(), "aggregator": shard_figures(), "fleet": fleet_figures(),
                 "forwarder": forwarder_figures(tmp_path)}
    assert {schema: problems(schema, figures) for schema, figures in published.items()} == {
        schema: [] for schema in published}
    assert set(published) | {"start_error"} == set(SCHEMAS)
    # As JSON writes and reads them: the fleet's partition keys are strings already.
    assert published["fleet"]["lag_by_partition"] == {"0": 5, "3": 0}
    assert problems("fleet", json.loads(json.dumps(published["fleet"]))) == []


def test_problems_name_the_key_that_is_missing_undeclared_or_of_the_wrong_type(tmp_path: Path) -> None:
    figures = forwarder_figures(tmp_path)
    del figures["lost_flushes"]
    figures["surprise"] = 1
    figures["bad_messages"] = "3"
    figures["sinks"]["file"]["failing"] = 7
    figures["sinks"]["file"]["dropped"] = {"buffer_full": True}
    assert problems("forwarder", figures) == [
        "forwarder.lost_flushes: missing", "forwarder.surprise: not declared",
        "forwarder.sinks['file'].dropped['buffer_full']: True is not int",
        "forwarder.sinks['file'].failing: 7 is not str | None",
        "forwarder.bad_messages: '3' is not int"]
    assert problems("nope", {}) == ["no schema 'nope' in stages/common/figure_schemas.py"]


def test_publish_records_the_schema_and_raises_in_strict_mode_on_figures_not_as_declared(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    publish(tmp_path, "receiver", "receiver", receiver_figures())
    assert read_all(tmp_path)["receiver"]["schema"] == "receiver"
    wrong = {**receiver_figures(), "datagrams": None}
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(FiguresNotAsDeclared, match="receiver.datagrams: None is not int"):
        publish(tmp_path, "receiver", "receiver", wrong)
    monkeypatch.delenv(STRICT_ENV)
    with caplog.at_level(logging.ERROR, logger="stages.rundir.figures"):
        publish(tmp_path, "receiver-2", "receiver", wrong)
        publish(tmp_path, "receiver-2", "receiver", wrong)
    assert len(caplog.records) == 1 and "receiver.datagrams: None is not int" in caplog.records[0].getMessage()
    assert read_all(tmp_path)["receiver-2"]["figures"]["datagrams"] is None  # still published


def test_status_reads_figures_through_their_schema(tmp_path: Path) -> None:
    record = {"schema": "forwarder", "figures": forwarder_figures(tmp_path), "updated": 100.0}
    assert figures_of(record, ForwarderFigures) == record["figures"]
    assert figures_of({**record, "schema": "receiver"}, ForwarderFigures) is None
    assert _summary(record) == "lost_metrics 3  lost_flushes 0"
    fleet = {"schema": "fleet", "figures": fleet_figures(), "updated": 100.0}
    assert _summary(fleet) == ("partitions 0,3  lag 5  open_intervals 1  intervals_closed 4  partials 10  hosts 1  "
                               "hosts_gone b  late_partials 2 (b=2)")
    # A record not as declared (an older stage's, say) shows no figures rather than failing status.
    assert _summary({"schema": "fleet", "figures": {"partitions": [1]}}) == ""
    # The fleet tier runs no receiver: told by the schema, not by a key of its figures.
    assert health({"aggregator-0": fleet, "forwarder": record}, 1, 1.0, now=101.0) == []
