"""What the rules cost the receiver's window alone: the load generator's realistic mix, fed to the
compiled window without rules and with bench/rules.yaml's (the rules of pystatsd-rules), in turns.

    .venv/bin/python -m bench.rules_window                       # 20,000 series, as make bench's mix-20
    .venv/bin/python -m bench.rules_window --evict 8             # caches made cold between bursts
    .venv/bin/python -m bench.rules_window --series 100000 --rounds 11
    .venv/bin/python -m bench.rules_window --rate 2000000        # cut by age too, as at 2 M lines/s

The datagrams are the generator's own (bench/loadgen.c, sent once to a loopback socket read here), so
the names and the shares each rule meets are the benchmark's. The window is taken as the receiver takes
it (when it holds WINDOW_BATCHES batches per shard, 2 shards). After one round that asks the rules of
every series, each round feeds every datagram to each window in turn; it prints the CPU nanoseconds
per line of the best round of each, and their ratio: the steady cost of the rules, a cached answer a
line. In the pipeline the shards and the forwarder share the receiver's core and evict its caches
between two reads; --evict N writes over N MiB between two bursts (uncounted) to show what a lookup
in the rules' answers (persistent, a few MiB at 20,000 series) then costs, where the window's own
entries (recently written) stay warm. The receiver also takes its window when it is batch_max_age_ms
old, and with the rules that is what cuts it: they merge the mix's 20,000 series into some 15,900
entries, short of the 16,000 that make a window full, so without --rate a window with rules is never
taken and every series stays filed in it. --rate N takes each window too once it holds the lines that
come in batch_max_age_ms at N lines/s, as the receiver does at that rate. Whole-pipeline figures are
make bench's (pystatsd-rules beside pystatsd).
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

from bench import peers
from bench.systems import RULES_FILE
from stages.common.config import Config, load_config
from stages.receiver.batcher import WINDOW_BATCHES
from stages.receiver.parsers import statsd_lines
from stages.receiver.rules.rule_set import load_rule_set
from stages.receiver.window import CompiledWindow, PyWindow, Window
from tests.unit.parser_benchmarks import BURST, feed_all

SHARDS = 2
#: Offered slowly enough for this reader to take every datagram, most of the time.
CAPTURE_RATE = 200_000
#: How long the reader waits for one more datagram once the generator has finished.
QUIET_SECS = 0.5


def capture(series: int, seconds: float, per_datagram: int = 20) -> list[bytes]:
    """The generator's mix for ``seconds`` at CAPTURE_RATE, as the datagrams it sent (those this reader got)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(QUIET_SECS)
    got: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while True:
            try:
                got.append(sock.recv(65536))
            except TimeoutError:
                if done.is_set():
                    return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        if not peers.LOADGEN.exists():
            peers.build_loadgen()
        with tempfile.TemporaryDirectory() as workdir:
            peers.run_loadgen(sock.getsockname()[1], CAPTURE_RATE, seconds, per_datagram, series,
                              Path(workdir) / "loadgen.json", mode="mix")
    finally:
        done.set()
        reader.join()
        sock.close()
    return got


def fed(window: Window, datagrams: list[bytes], full: int, evict: bytearray | None, aged: int = 0) -> float:
    """CPU seconds to feed every datagram, in bursts, taking the window whenever it holds ``full`` entries or, given
    ``aged``, has taken that many lines since the last take; with ``evict``, written over between two bursts (not
    counted)."""
    bad: dict[str, int] = {}
    seconds = 0.0
    lines = 0
    for start in range(0, len(datagrams), BURST):
        if evict is not None:
            evict[::64] = bytes(len(evict[::64]))
        burst = datagrams[start:start + BURST]
        lines += sum(datagram.count(b"\n") + 1 for datagram in burst)
        started = time.process_time()
        window.feed(burst, 0, bad)
        if window.entries >= full or (aged and lines >= aged):
            window.take(Config().batch_max_entries)
            lines = 0
        seconds += time.process_time() - started
    return seconds


def measure(datagrams: list[bytes], rounds: int, python: bool, evict_mib: int = 0, rate: int = 0) -> dict[str, float]:
    """CPU nanoseconds per line (the best round) of the window without rules and with bench/rules.yaml's."""
    lines = sum(datagram.count(b"\n") + 1 for datagram in datagrams)
    rules = load_rule_set(load_config(RULES_FILE), RULES_FILE.parent)
    window_type = PyWindow if python or CompiledWindow is None else CompiledWindow
    windows: dict[str, Window] = {"without rules": window_type(SHARDS, (), statsd_lines({})),
                                  "with bench/rules.yaml": window_type(SHARDS, (), statsd_lines({}), rules)}
    full = WINDOW_BATCHES * Config().batch_max_entries * SHARDS
    for window in windows.values():
        feed_all(window, datagrams, full)  # every series seen: the rules asked once each
    evict = bytearray(evict_mib << 20) if evict_mib else None
    aged = int(rate * Config().batch_max_age_ms / 1000)
    best = dict.fromkeys(windows, float("inf"))
    for _ in range(rounds):
        for label, window in windows.items():
            best[label] = min(best[label], fed(window, datagrams, full, evict, aged))
    return {label: seconds / lines * 1e9 for label, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=2.0, help="of the generator's mix, at 200,000 lines/s")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--python", action="store_true", help="PyWindow, the specification, instead of the C")
    parser.add_argument("--evict", type=int, default=0, metavar="MIB",
                        help="MiB written over between two bursts of datagrams, as the shards' work would (0: none)")
    parser.add_argument("--rate", type=int, default=0, metavar="LINES_PER_S",
                        help="also take the window when batch_max_age_ms has passed at this rate (0: only when full)")
    args = parser.parse_args()
    datagrams = capture(args.series, args.seconds)
    figures = measure(datagrams, args.rounds, args.python, args.evict, args.rate)
    for label, nanoseconds in figures.items():
        print(f"{label:24s} {nanoseconds:7.0f} ns/line")
    plain, ruled = figures.values()
    print(f"{'ratio':24s} {ruled / plain:7.2f}× the time, {plain / ruled:.0%} of the rate")


if __name__ == "__main__":
    main()
