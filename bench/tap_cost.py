"""What ``pystatsd tap`` costs: the CPU a pipeline spends per million metrics of the realistic mix, with no
tap, and with one tap listening (``--tap received|mapped|flushed``). A short comparison, not ``make
bench``: one pipeline (the harness's, 2 shards, 1 s flush, a file sink), bench/loadgen.c's mix at a fixed
rate, ``--runs`` runs, each one's figures printed and their median. The pipeline runs the stages of the
tree this is run from (``python -m`` puts it first): for main's side of an A/B, run it from an export of
main with this file, the compiled parts and a link to the .venv copied in (bench/RESULTS.md shows how).

    .venv/bin/python -m bench.tap_cost --rate 150000 --runs 5 [--tap received]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import peers
from bench.procstat import cpu_seconds, udp_drops
from harness.paths import VENV_BIN
from harness.pipeline import Pipeline
from harness.wait import wait_for
from stages.rundir.figures import read_all


def receiver_metrics(pipeline: Pipeline) -> int:
    return int(read_all(pipeline.run_dir).get("receiver", {}).get("figures", {}).get("metrics", 0))


def one_run(pipeline: Pipeline, rate: float, duration: float, workdir: Path) -> dict[str, Any]:
    pids = [pid for _, pid in pipeline.status().values() if pid]
    receiver = next(pid for name, (_, pid) in pipeline.status().items() if name.startswith("receiver") and pid)
    before_all, before_receiver = sum(cpu_seconds(pid) for pid in pids), cpu_seconds(receiver)
    metrics_before, drops_before = receiver_metrics(pipeline), udp_drops(pipeline.statsd_port)
    report = peers.run_loadgen(pipeline.statsd_port, rate, duration, 20, 20_000, workdir / "loadgen.json", mode="mix")
    sent = int(report["metrics_sent"])
    # The receiver publishes its figures once per interval: until they count what was sent (or stop growing).
    last = [-1]

    def settled() -> bool:
        now = receiver_metrics(pipeline) - metrics_before
        done = now >= sent or now == last[0]
        last[0] = now
        return done

    wait_for(settled, 30, "the receiver's figures to count the run", every=1.5)
    received = receiver_metrics(pipeline) - metrics_before
    spent_all = sum(cpu_seconds(pid) for pid in pids) - before_all
    spent_receiver = cpu_seconds(receiver) - before_receiver
    return {"sent": sent, "received": received, "kernel_drops": udp_drops(pipeline.statsd_port) - drops_before,
            "receiver_cpu_s_per_m": round(spent_receiver / sent * 1e6, 3),
            "pipeline_cpu_s_per_m": round(spent_all / sent * 1e6, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=150_000)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tap", choices=("received", "mapped", "flushed"))
    args = parser.parse_args()
    if not peers.LOADGEN.exists():
        peers.build_loadgen()
    workdir = Path(tempfile.mkdtemp(prefix="tapcost"))
    with Pipeline(flush_interval=1.0) as pipeline:
        tap = None
        if args.tap:
            tap = subprocess.Popen([VENV_BIN / "pystatsd", "tap", "--where", args.tap, "-c", str(pipeline.config_path),
                                    "--run-dir", str(pipeline.run_dir)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, env=pipeline.env)
            assert tap.stderr is not None
            assert "tapping" in tap.stderr.readline()
        try:
            time.sleep(1.0)  # past the start-up's own work, so the first run measures the load alone
            runs = [one_run(pipeline, args.rate, args.duration, workdir) for _ in range(args.runs)]
        finally:
            if tap is not None:
                tap.terminate()
                tap.wait()
    for run in runs:
        print(json.dumps(run))
    print(json.dumps({"median": {key: statistics.median(run[key] for run in runs) for key in runs[0]},
                      "tap": args.tap, "tree": str(peers.REPO)}))


if __name__ == "__main__":
    main()
