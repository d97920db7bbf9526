"""What bad input costs the receiver: the hostile mix through the window, and through a real pipeline.

The hostile mix (tests/unit/parser_benchmarks.py, ``hostile_datagrams``): a line a datagram, one good
line of the realistic mix in five, the rest random bytes, invalid UTF-8, NaN and infinities, deep
JSON (arrays and objects 100 to 10,000 deep) and huge tag counts (65 to 300 tags), evenly.

    .venv/bin/python -m bench.hostile window                  # ns per datagram: hostile, by kind, and good
    .venv/bin/python -m bench.hostile window --baseline-window /tmp/old/_window.cpython-311-x86_64-linux-gnu.so
    .venv/bin/python -m bench.hostile pipeline --rate 30000 --seconds 10

``window`` feeds a fixed corpus (the same every run) to each window implementation in turn, several
rounds, and prints the median nanoseconds per datagram and the lines the compiled window handed to the
Python parser. ``--baseline-window`` adds another build of window.c (built from an earlier commit:
``git worktree add /tmp/old <commit>`` and compile it there, or pip install it in a scratch venv) to
the same run, so before and after are measured side by side.

``pipeline`` starts a real pipeline (harness/pipeline.py: one receiver, two shards, a file sink),
offers it the hostile mix at ``--rate`` datagrams/s for ``--seconds`` (paced, bounded), and reports
what the receiver read, what the kernel dropped on its socket, its bad lines and metrics against
what the mix holds (computed beforehand with the Python parser), and the receiver's CPU time per
datagram (from /proc: less sensitive to neighbours on a shared machine than the drop count).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import random
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procstat
from harness.pipeline import Pipeline, total
from harness.wait import wait_for
from stages.receiver.parsers import payload_parser, statsd_lines
from stages.receiver.window import CompiledWindow, PyWindow, Window, take_payloads
from tests.unit.parser_benchmarks import (
    BURST,
    HOSTILE_KINDS,
    hostile_datagram,
    hostile_datagrams,
    mix_datagrams,
)

WindowType = Callable[..., Window]


def load_window(path: Path) -> WindowType:
    """The Window type of another build of window.c (its module is named _window whatever the file)."""
    loader = importlib.machinery.ExtensionFileLoader("_window", str(path))
    spec = importlib.util.spec_from_file_location("_window", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    window: WindowType = module.Window
    return window


def feed_cost(window_type: WindowType, datagrams: list[bytes]) -> tuple[float, int]:
    """CPU nanoseconds per datagram through a fresh window (the receiver's bursts, its payload parser),
    and the lines it handed to the Python parser (-1 where it does not count them)."""
    window = window_type(1, (), statsd_lines({}))
    parse = payload_parser({})
    bad: dict[str, int] = {}
    started = time.thread_time()  # CPU time: what neighbours on a shared machine disturb least
    for start in range(0, len(datagrams), BURST):
        take_payloads(window, datagrams[start:start + BURST], parse, bad)
    elapsed = time.thread_time() - started
    window.take(1000)
    return elapsed / len(datagrams) * 1e9, getattr(window, "fallbacks", -1)


def window_benchmark(windows: dict[str, WindowType], datagrams: int, rounds: int) -> list[tuple[str, str, float, int]]:
    """(load, window, median ns per datagram, fallbacks) for every load and window, the windows taking
    turns round by round."""
    loads = {"hostile mix": hostile_datagrams(datagrams, seed=1),
             "good, 1 line a datagram": mix_datagrams(20_000, datagrams, seed=2, per_datagram=1),
             "good, 20 lines a datagram": mix_datagrams(20_000, datagrams // 10, seed=3)}
    per_line = {"good, 20 lines a datagram": 20}
    for index, kind in enumerate(HOSTILE_KINDS):
        rng = random.Random(10 + index)
        loads[f"  {kind}"] = [hostile_datagram(rng, kind, 20_000) for _ in range(datagrams // 5)]
    rows = []
    for load, corpus in loads.items():
        timings: dict[str, list[float]] = {label: [] for label in windows}
        fallbacks: dict[str, int] = {}
        for _ in range(rounds):
            for label, window_type in windows.items():
                nanoseconds, fallbacks[label] = feed_cost(window_type, corpus)
                timings[label].append(nanoseconds / per_line.get(load, 1))
        for label in windows:
            rows.append((load, label, statistics.median(timings[label]), fallbacks[label]))
    return rows


def expected_counts(pool: list[bytes]) -> list[tuple[int, int]]:
    """Per datagram of ``pool``: (metrics, bad lines) as the Python parser (the specification) reads it."""
    counts = []
    for data in pool:
        window = PyWindow(1, (), statsd_lines({}))
        bad: dict[str, int] = {}
        take_payloads(window, [data], payload_parser({}), bad)
        counts.append((window.metrics, sum(bad.values())))
    return counts


def offer(pipeline: Pipeline, pool: list[bytes], rate: float, seconds: float) -> int:
    """The pool, round and round, to the pipeline's statsd port at ``rate`` datagrams/s; the count sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
    address = ("127.0.0.1", pipeline.statsd_port)
    to_send = int(rate * seconds)
    started = time.monotonic()
    for i in range(to_send):
        sock.sendto(pool[i % len(pool)], address)
        if i % 200 == 0:
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    sock.close()
    late = time.monotonic() - started - seconds
    if late > 0.05 * seconds:
        print(f"warning: the sender ran {late:.2f} s late: the offered rate was below {rate:,.0f}/s")
    return to_send


def pipeline_run(rate: float, seconds: float, pool_size: int) -> dict[str, Any]:
    pool = hostile_datagrams(pool_size, seed=7)
    expected = expected_counts(pool)
    with Pipeline() as pipeline:
        receiver_pid = pipeline.status()["receiver"][1]
        assert receiver_pid is not None
        cpu_before = procstat.cpu_seconds(receiver_pid)
        sent = offer(pipeline, pool, rate, seconds)

        def read_and_dropped() -> tuple[float, float]:
            return (total(pipeline.series("pystatsd.receiver.datagrams")),
                    total(pipeline.series("pystatsd.receiver.kernel_drops")))

        wait_for(lambda: sum(read_and_dropped()) >= sent, 60, "the receiver to account for every datagram")
        cpu = procstat.cpu_seconds(receiver_pid) - cpu_before
        read, dropped = read_and_dropped()
        # Metrics and bad lines of an interval are reported with its datagrams: settled once those are.
        metrics = total(pipeline.series("pystatsd.receiver.metrics"))
        bad = total(pipeline.series("pystatsd.receiver.bad_lines"))
    want_metrics = sum(expected[i % len(pool)][0] for i in range(sent))
    want_bad = sum(expected[i % len(pool)][1] for i in range(sent))
    return {"offered per s": rate, "seconds": seconds, "sent": sent, "read": read, "kernel drops": dropped,
            "metrics": metrics, "metrics expected": want_metrics, "bad lines": bad, "bad lines expected": want_bad,
            "receiver CPU s": cpu, "receiver CPU us per datagram": cpu / sent * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    window = modes.add_parser("window", help="the window alone, on a fixed corpus")
    window.add_argument("--datagrams", type=int, default=20_000)
    window.add_argument("--rounds", type=int, default=5)
    window.add_argument("--baseline-window", type=Path, help="another build of window.c, measured in the same run")
    window.add_argument("--python", action="store_true", help="the Python window too (slow)")
    run = modes.add_parser("pipeline", help="a real pipeline, paced UDP")
    run.add_argument("--rate", type=float, default=30_000)
    run.add_argument("--seconds", type=float, default=10)
    run.add_argument("--pool", type=int, default=20_000, help="distinct datagrams the mix cycles through")
    args = parser.parse_args()
    if args.mode == "window":
        windows: dict[str, WindowType] = {}
        if CompiledWindow is not None:
            windows["compiled"] = CompiledWindow
        if args.baseline_window:
            windows["baseline"] = load_window(args.baseline_window)
        if args.python or not windows:
            windows["python"] = PyWindow
        print(f"{'load':<28} {'window':<10} {'ns/datagram':>12} {'fallbacks':>10}   (ns/line for 20 a datagram)")
        for load, label, nanoseconds, fallbacks in window_benchmark(windows, args.datagrams, args.rounds):
            shown = "" if fallbacks < 0 else f"{fallbacks:,}"
            print(f"{load:<28} {label:<10} {nanoseconds:12,.0f} {shown:>10}")
    else:
        for key, value in pipeline_run(args.rate, args.seconds, args.pool).items():
            print(f"{key:<28} {value:,.2f}" if isinstance(value, float) else f"{key:<28} {value:,}")


if __name__ == "__main__":
    main()
