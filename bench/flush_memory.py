"""Peak RSS of each process of the pipeline around one flush of the benchmark's 100,000-series mix.

The target (issue 26): a flush of 100,000 series stays under 80 MiB RSS in every process. The
benchmark (bench/run.py, load mix-20-100k) measures it under a whole pipeline; this is the bounded
measurement beside it, one stage at a time, each in a process of its own whose peak RSS (the
kernel's VmHWM) is nothing but that stage's:

- **shard**: each of 2 shards holds its half of the series as a 10 s interval of the mix at
  679,000 metrics/s (bench/RESULTS.md's highest loss-free rate of that load) left them: 50 %
  counters, 30 % timers (about 68 log-normal values each), 15 % gauges, 5 % sets (about 68 members
  of u0-u999999 each), each series a name with three tags as bench/loadgen.c draws them. The shard
  (stages.aggregator.shard's ShardState) merges them as batches, closes the interval and encodes its
  flush (the contract's frames, kept for the forwarder's run);
- **forwarder**: the real Forwarder loop with one sink (its config as a user writes it) takes the
  two shards' flushes over its ZeroMQ socket and the sink delivers them: ``file`` (the benchmark's
  sink), ``kafka`` (its encoding and records, the producer stood in for: no broker), ``otlp``,
  ``prometheus_remote_write``, ``influxdb`` and ``graphite`` (to a loopback server here that reads
  and discards);
- **receiver**: the Receiver loop reads every series' line twice (UDP, 20 lines a datagram) and
  hands its batches to two shard sockets that discard them.

From the repo root:

    .venv/bin/python -m bench.flush_memory                  # 100,000 series, about a minute
    .venv/bin/python -m bench.flush_memory --series 2000 --sinks file --json out.json

It prints one line per process (its peak, and its RSS before the flush came: imports, sockets,
the state it started with) and a verdict against the target; ``--tracemalloc`` adds the peak of
what Python itself allocated. No timing is judged, nothing is sent off the machine.
"""

from __future__ import annotations

import argparse
import http.server
import json
import math
import random
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from harness.proc_status import status_kib

#: What each process must stay under (issue 26).
TARGET_MIB = 80.0
SERIES = 100_000
SHARDS = 2
INTERVAL = 10.0
#: The metrics of one interval: the mix-20-100k load's highest loss-free rate, 679,000/s, for 10 s.
METRICS = 6_790_000
#: bench/loadgen.c's mix: percent of lines per kind, and names per kind.
SHARES = {"counter": 50, "timer": 30, "gauge": 15, "set": 5}
PREFIXES = {"counter": "bench.c", "timer": "bench.t", "gauge": "bench.g", "set": "bench.s"}
NAMES = 1000
SINKS = ("file", "kafka", "otlp", "prometheus_remote_write", "influxdb", "graphite")
#: An interval's edge: the shard's interval starts here.
START = 1_800_000_000.0
#: Entries per batch the shard merges (a receiver's batch holds a few thousand).
BATCH_ENTRIES = 2000
#: A child gives up after this long (a sink that never delivers).
CHILD_TIMEOUT_SECS = 300.0


def peak_mib() -> float:
    """This process's peak resident set (VmHWM), MiB."""
    return status_kib("self", "VmHWM") / 1024


def rss_mib() -> float:
    return status_kib("self", "VmRSS") / 1024


def mix_series(series: int) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(kind, name, flat tags) of every series of the mix, as bench/loadgen.c names them."""
    for kind, share in SHARES.items():
        for j in range(max(1, series * share // 100)):
            host = j // NAMES
            yield kind, f"{PREFIXES[kind]}{j % NAMES}", ("env", "bench", "host", f"h{host}", "zone", f"z{host % 4}")


# --- the shard -------------------------------------------------------------------------------------


def shard_child(args: argparse.Namespace) -> dict[str, Any]:
    from stages.aggregator.shard import FLUSH_GRACE_SECS, ShardState
    from stages.common import contract
    from stages.common.config import Config
    from stages.common.model import series_key
    from stages.common.sharding import shard_for

    config = Config()
    state = ShardState(args.shard, INTERVAL, config.percentiles, config.expire_after_intervals,
                       config.self_metrics_prefix, config.agent.tags, now=START + 1,
                       series_limit=config.series_limit_per_name, gauges_limit=config.gauges_limit)
    rng = random.Random(args.shard)
    per_timer = max(1, round(args.metrics * SHARES["timer"] / 100 / max(1, args.series * SHARES["timer"] // 100)))
    per_set = max(1, round(args.metrics * SHARES["set"] / 100 / max(1, args.series * SHARES["set"] // 100)))
    baseline = rss_mib()
    seq = 0
    body = contract.BatchBody.empty()
    entries = 0
    series = 0

    def merge() -> None:
        nonlocal seq, body, entries
        header = contract.BatchHeader(src="flush_memory", epoch=1, seq=seq, ts=START + 1, n=entries)
        state.add_batch(header, contract.pack_batch_body(body))
        seq, body, entries = seq + 1, contract.BatchBody.empty(), 0

    for kind, name, tags in mix_series(args.series):
        if shard_for(name, SHARDS) != args.shard:
            continue
        series += 1
        key = series_key(name, tags)
        if kind == "counter":
            body.counters.extend((key, float(rng.randint(1, 200))))
        elif kind == "gauge":
            body.gauges.extend((key, True, rng.randrange(1_000_000) / 100))
        elif kind == "timer":
            values = array("d", (round(rng.lognormvariate(math.log(25), 1.0), 2) for _ in range(per_timer)))
            body.sampled.extend((key, 4, float(per_timer), contract.pack_values(values)))
        else:
            body.sets.extend((key, [f"u{rng.randrange(1_000_000)}" for _ in range(per_set)]))
        entries += 1
        if entries == BATCH_ENTRIES:
            merge()
    if entries:
        merge()
    held = rss_mib()
    if args.tracemalloc:
        tracemalloc.start()
    (closed,) = state.due(START + INTERVAL + FLUSH_GRACE_SECS + 1)
    header = contract.FlushHeader(shard=args.shard, shards=SHARDS, epoch=1, seq=0, interval_start=closed.start,
                                  interval=closed.interval, n=closed.count, covers=closed.covers)
    # As the shard's loop hands it to its outbox (stages.aggregator.shard_loop's queue_flush).
    frames = contract.encode_flush(header, closed.body, closed.partials)
    aggregates = closed.count
    del closed
    write_frames(Path(args.out), frames)
    return {"process": f"shard {args.shard}", "peak_mib": peak_mib(), "before_mib": baseline, "held_mib": held,
            "series": series, "aggregates": aggregates, "flush_bytes": len(frames[2]), **_traced(args)}


def write_frames(path: Path, frames: list[bytes]) -> None:
    """A flush's frames to a file, each after its length (written as they are: no copy of them is made)."""
    with path.open("wb") as out:
        for frame in frames:
            out.write(len(frame).to_bytes(8, "little"))
            out.write(frame)


def read_frames(path: Path) -> list[bytes]:
    data, frames, at = path.read_bytes(), [], 0
    while at < len(data):
        size = int.from_bytes(data[at:at + 8], "little")
        frames.append(data[at + 8:at + 8 + size])
        at += 8 + size
    return frames


def _traced(args: argparse.Namespace) -> dict[str, Any]:
    if not args.tracemalloc:
        return {}
    _, traced_peak = tracemalloc.get_traced_memory()
    return {"traced_peak_mib": traced_peak / 2**20}


# --- the forwarder ---------------------------------------------------------------------------------


class StandInProducer:
    """kafka-python's producer where no broker runs: every record delivered at once."""

    class Delivered:
        exception = None

        def succeeded(self) -> bool:
            return True

        def failed(self) -> bool:
            return False

    delivered = Delivered()

    def __init__(self, **settings: Any) -> None:
        pass

    def send(self, *args: Any, **kwargs: Any) -> Delivered:
        return self.delivered

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def forwarder_child(args: argparse.Namespace) -> dict[str, Any]:
    import kafka

    from stages.common.config import load_config
    from stages.forwarder.fanout import Fanout
    from stages.forwarder.forwarder_loop import Forwarder
    from stages.forwarder.sinks import build_sinks

    run = Path(args.run)
    config_file = Path(args.config)
    config = load_config(config_file)
    # The Kafka sink's producer acknowledges at once in this child: what is measured is its encoding.
    kafka.KafkaProducer = StandInProducer
    sinks = build_sinks(config)
    fanout = Fanout(sinks)
    fanout.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    forwarder = Forwarder(config, SHARDS, fanout, ctx, run, config_file, stopped_alone=lambda _: False)
    baseline = rss_mib()
    if args.tracemalloc:
        tracemalloc.start()
    print("ready", flush=True)
    deadline = time.monotonic() + CHILD_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if forwarder.pull.poll(50):
            forwarder.receive_all()
        figures = fanout.figures()
        if all(row["delivered"] + sum(row["dropped"].values()) >= args.expect for row in figures.values()):
            break
    figures = fanout.figures()
    result = {"process": f"forwarder ({args.sink})", "peak_mib": peak_mib(), "before_mib": baseline,
              "delivered": sum(row["delivered"] for row in figures.values()),
              "dropped": sum(sum(row["dropped"].values()) for row in figures.values()), **_traced(args)}
    forwarder.pull.close(linger=0)
    fanout.stop(1.0, 1.0)
    ctx.destroy(linger=0)
    return result


def sink_config(sink: str, tmp: Path, http_port: int, tcp_port: int) -> str:
    """The ``forwarders:`` section of one sink, as a user writes it, to the loopback servers here."""
    http = f"http://127.0.0.1:{http_port}"
    section = {
        "file": f"path: {tmp / 'out.jsonl'}",
        "kafka": "kafka_broker: 127.0.0.1:9\n    kafka_topic: bench",
        "otlp": f"endpoint: {http}",
        "prometheus_remote_write": f"url: {http}/api/v1/write",
        "influxdb": f"url: {http}\n    database: bench",
        "graphite": f"host: 127.0.0.1\n    port: {tcp_port}",
    }[sink]
    return f"flush_interval: {INTERVAL}\nforwarders:\n  {sink}:\n    {section}\n"


class Discard(http.server.BaseHTTPRequestHandler):
    """Reads each POST and answers 204 (200 with an empty body for OTLP, which reads a response)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = 200 if self.path.endswith("/v1/metrics") else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class DiscardLines(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while self.request.recv(1 << 16):
            pass


def run_forwarder(args: argparse.Namespace, sink: str, tmp: Path, flushes: list[Path], expect: int,
                  ports: tuple[int, int]) -> dict[str, Any]:
    run = tmp / f"run-{sink}"
    run.mkdir(mode=0o700)
    config = tmp / f"{sink}.yaml"
    config.write_text(sink_config(sink, tmp, *ports))
    child = subprocess.Popen([sys.executable, "-m", "bench.flush_memory", "--child", "forwarder", "--sink", sink,
                              "--run", str(run), "--config", str(config), "--expect", str(expect),
                              *(["--tracemalloc"] if args.tracemalloc else [])],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        child.kill()
        raise RuntimeError(f"the forwarder child for {sink} did not start")
    from stages.common.sharding import forwarder_endpoint

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(forwarder_endpoint(run))
    for path in flushes:
        push.send_multipart(read_frames(path))
    return _result(child, push, ctx)


def _result(child: subprocess.Popen[str], push: zmq.Socket[bytes],
            ctx: zmq.Context[zmq.Socket[bytes]]) -> dict[str, Any]:
    try:
        out, _ = child.communicate(timeout=CHILD_TIMEOUT_SECS + 30)
    finally:
        push.close(linger=0)
        ctx.destroy(linger=0)
    if child.returncode != 0:
        raise RuntimeError(f"a child failed (exit {child.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# --- the receiver ----------------------------------------------------------------------------------


def receiver_child(args: argparse.Namespace) -> dict[str, Any]:
    from stages.common.config import load_config
    from stages.common.sharding import shard_endpoint
    from stages.receiver.receiver_loop import Receiver

    run = Path(args.run)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pulls = []
    for shard in range(SHARDS):
        pull = ctx.socket(zmq.PULL)
        pull.bind(shard_endpoint(run, shard, SHARDS))
        pulls.append(pull)
    config_file = Path(args.config)
    receiver = Receiver(load_config(config_file), SHARDS, ctx, run, "receiver", config_file=config_file)
    baseline = rss_mib()
    if args.tracemalloc:
        tracemalloc.start()
    print("ready", flush=True)
    deadline = time.monotonic() + CHILD_TIMEOUT_SECS
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 3.0:
        before = receiver.datagrams
        for listener in receiver.listeners:
            for fd in listener.fds():
                receiver.read(listener, fd)
        receiver.send_due()
        for pull in pulls:
            while pull.poll(0):
                pull.recv_multipart()
        if receiver.datagrams != before:
            quiet_since = time.monotonic()
        elif receiver.datagrams >= args.expect:
            break
        else:
            time.sleep(0.001)
    result = {"process": "receiver", "peak_mib": peak_mib(), "before_mib": baseline,
              "datagrams": receiver.datagrams, **_traced(args)}
    receiver.stop()
    ctx.destroy(linger=0)
    return result


def run_receiver(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    run = tmp / "run-receiver"
    run.mkdir(mode=0o700)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp / "receiver.yaml"
    config.write_text(f"bind_address: 127.0.0.1\nbind_port: {port}\nflush_interval: {INTERVAL}\n")
    rng = random.Random(7)
    lines = []
    for _ in range(2):
        for kind, name, tags in mix_series(args.series):
            value = {"counter": "1|c", "timer": f"{rng.lognormvariate(math.log(25), 1.0):.2f}|ms",
                     "gauge": f"{rng.randrange(1_000_000) / 100:.2f}|g", "set": f"u{rng.randrange(1_000_000)}|s"}[kind]
            lines.append(f"{name}:{value}|#{tags[0]}:{tags[1]},{tags[2]}:{tags[3]},{tags[4]}:{tags[5]}")
    rng.shuffle(lines)
    datagrams = ["\n".join(lines[i:i + 20]).encode() for i in range(0, len(lines), 20)]
    del lines
    child = subprocess.Popen([sys.executable, "-m", "bench.flush_memory", "--child", "receiver", "--run", str(run),
                              "--config", str(config), "--expect", str(len(datagrams)),
                              *(["--tracemalloc"] if args.tracemalloc else [])],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        child.kill()
        raise RuntimeError("the receiver child did not start")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i, datagram in enumerate(datagrams):
            sender.sendto(datagram, ("127.0.0.1", port))
            if i % 200 == 199:
                time.sleep(0.002)  # paced: the child reads in the same core's turns
    out, _ = child.communicate(timeout=CHILD_TIMEOUT_SECS + 30)
    if child.returncode != 0:
        raise RuntimeError(f"the receiver child failed (exit {child.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["sent"] = len(datagrams)
    return result


# --- the parent ------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="pystatsd-mem-") as folder:
        tmp = Path(folder)
        flushes = []
        for shard in range(SHARDS):
            out = tmp / f"flush-{shard}.bin"
            done = subprocess.run([sys.executable, "-m", "bench.flush_memory", "--child", "shard", "--shard",
                                   str(shard), "--series", str(args.series), "--metrics", str(args.metrics),
                                   "--out", str(out), *(["--tracemalloc"] if args.tracemalloc else [])],
                                  stdout=subprocess.PIPE, text=True, check=True, timeout=CHILD_TIMEOUT_SECS)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            flushes.append(out)
        expect = sum(r["aggregates"] for r in results)
        http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discard)
        tcp_server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), DiscardLines)
        tcp_server.daemon_threads = http_server.daemon_threads = True
        servers = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True)
                   for s in (http_server, tcp_server)]
        for thread in servers:
            thread.start()
        try:
            ports = (http_server.server_address[1], tcp_server.server_address[1])
            for sink in args.sinks:
                results.append(run_forwarder(args, sink, tmp, flushes, expect, ports))
        finally:
            http_server.shutdown()
            tcp_server.shutdown()
            http_server.server_close()
            tcp_server.server_close()
        if args.receiver:
            results.append(run_receiver(args, tmp))
    return results


def report(results: list[dict[str, Any]], series: int) -> str:
    lines = [f"Peak RSS per process, one flush of {series:,} series of the mix ({SHARDS} shards; target "
             f"< {TARGET_MIB:.0f} MiB each):"]
    for r in results:
        extra = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.1f}" for k, v in r.items()
                          if k not in ("process", "peak_mib", "before_mib"))
        lines.append(f"  {r['process']:<36} peak {r['peak_mib']:6.1f} MiB  (before the flush {r['before_mib']:5.1f} "
                     f"MiB; {extra})")
    worst = max(results, key=lambda r: r["peak_mib"])
    verdict = "met" if worst["peak_mib"] < TARGET_MIB else f"missed by {worst['peak_mib'] - TARGET_MIB:.1f} MiB"
    lines.append(f"largest: {worst['process']} {worst['peak_mib']:.1f} MiB: {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=SERIES, help=f"series of the mix (default {SERIES:,})")
    parser.add_argument("--metrics", type=int, default=None,
                        help=f"metrics in the interval (default {METRICS:,} for {SERIES:,} series, in proportion)")
    parser.add_argument("--sinks", type=lambda s: s.split(","), default=list(SINKS),
                        help=f"the forwarder's sinks, one run each (default {','.join(SINKS)})")
    parser.add_argument("--no-receiver", dest="receiver", action="store_false", help="leave the receiver out")
    parser.add_argument("--tracemalloc", action="store_true", help="also the peak of Python's own allocations")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", choices=("shard", "forwarder", "receiver"), help=argparse.SUPPRESS)
    for hidden in ("--shard", "--expect"):
        parser.add_argument(hidden, type=int, default=0, help=argparse.SUPPRESS)
    for hidden in ("--out", "--run", "--config", "--sink"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.metrics is None:
        args.metrics = METRICS * args.series // SERIES
    unknown = set(args.sinks) - set(SINKS)
    if unknown:
        parser.error(f"--sinks: unknown {', '.join(sorted(unknown))} (known: {', '.join(SINKS)})")
    if args.child:
        child = {"shard": shard_child, "forwarder": forwarder_child, "receiver": receiver_child}[args.child]
        print(json.dumps(child(args)), flush=True)
        return 0
    results = measure(args)
    print(report(results, args.series))
    if args.json:
        Path(args.json).write_text(json.dumps({"series": args.series, "metrics": args.metrics, "results": results},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
