"""Why pystatsd exists, through rules: a client that puts the variations of a metric in its dotted name
still gives InfluxDB one measurement per metric, the variations as tags, once a statsd_exporter mapping
file (loaded unchanged) or native rules say how to read the name."""

from __future__ import annotations

import textwrap

import pytest

from harness.wait import wait_for
from tests.sinks.conftest import INFLUX_ADMIN
from tests.sinks.servers import InfluxServer, own, sink_pipeline

pytestmark = pytest.mark.servers

USER, PASSWORD = INFLUX_ADMIN

#: A statsd_exporter user's file, as it is: the web service's latencies and Airflow's DAG run durations.
MAPPING = textwrap.dedent("""\
    mappings:
    - match: "api.*.*.*.latency"
      name: "api_latency"
      labels: {host: "$1", method: "$2", endpoint: "$3"}
    - match: "airflow.dagrun.duration.*.*"
      name: "airflow_dagrun_duration"
      labels: {state: "$1", dag_id: "$2"}
    - match: "airflow.debug.*"
      action: drop
      name: "dropped"
    """)
#: A native rule beside it: the pods' names dropped from one counter, so their series merge.
RULES = [{"match": "web.requests", "drop_tags": ["pod"]}]

LINES = ["api.host-7.GET.users.latency:12|ms", "api.host-7.GET.users.latency:20|ms",
         "api.host-8.POST.orders.latency:5|ms",
         "airflow.dagrun.duration.success.etl:300|ms", "airflow.dagrun.duration.failed.etl:10|ms",
         "airflow.dagrun.duration.success.report:20|ms", "airflow.debug.heartbeat:1|c",
         "web.requests:1|c|#pod:web-1,env:prod", "web.requests:2|c|#pod:web-2,env:prod"]


def measurements(influx: InfluxServer) -> set[str]:
    try:
        series = influx.query("SHOW MEASUREMENTS", "rules")[0].get("series", [])
    except AssertionError as exc:
        if "database not found" in str(exc):
            return set()
        raise
    return {row[0] for s in series for row in s["values"] if not row[0].startswith("pystatsd.")}


def test_dotted_names_become_one_measurement_per_metric_with_their_parts_as_tags(influx: InfluxServer) -> None:
    pipeline = sink_pipeline("influxdb", {"url": influx.url, "database": "rules", "username": USER,
                                          "password": PASSWORD, "create_database": True},
                             mapping_config="mapping.yml", rules=RULES)
    (pipeline.dir / "mapping.yml").write_text(MAPPING)
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        pipeline.send("\n".join(LINES), pipeline.statsd_port)
        wanted = {"api_latency", "airflow_dagrun_duration", "web.requests"}
        wait_for(lambda: measurements(influx) >= wanted, 15, "the mapped measurements", every=0.5)
    finally:
        pipeline.stop()
    flushed = own(pipeline.aggregates())
    pipeline.cleanup()

    assert measurements(influx) == wanted  # nothing exploded into a measurement of its own, nothing dropped there
    latency = {(p["host"], p["method"], p["endpoint"]): (p["count"], p["sum"])
               for p in influx.points("rules", "api_latency")}
    assert latency == {("host-7", "GET", "users"): (2.0, 32.0), ("host-8", "POST", "orders"): (1.0, 5.0)}
    runs = {(p["state"], p["dag_id"]): (p["count"], p["sum"])
            for p in influx.points("rules", "airflow_dagrun_duration")}
    assert runs == {("success", "etl"): (1.0, 300.0), ("failed", "etl"): (1.0, 10.0),
                    ("success", "report"): (1.0, 20.0)}
    (requests,) = influx.points("rules", "web.requests")
    assert (requests["value"], requests["env"], requests.get("pod")) == (3.0, "prod", None)
    # What InfluxDB holds is what was flushed, and the dropped line is nowhere.
    assert {a["name"] for a in flushed} == wanted
