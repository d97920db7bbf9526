"""What ``pystatsd tap`` and ``pystatsd top`` cost, part of ``make bench``: the CPU a pipeline spends per million
metrics of the realistic mix, and what it takes in, with nobody watching and with one watcher: a tap at each
point (``pystatsd tap --where received|mapped|flushed``), or a top asking the shards for their busiest names.

One pipeline (the harness's: 2 shards, 1 s flush, a file sink) serves every turn; bench/loadgen.c sends the
mix at a fixed ``--rate`` for ``--duration`` s a run, and the turns take turns run by run, ``--runs`` rounds
(each round starting one turn later), so a drift in the machine's speed falls on all alike; each turn's
medians are its figures. The table goes into bench/RESULTS.md between this script's own markers
(bench/report.py's write_between: bench/run.py's part and the hand-written text stay as they are).

    .venv/bin/python -m bench.tap_cost --json bench/.build/tap_cost.json     # make bench: a few minutes
    .venv/bin/python -m bench.tap_cost --runs 1 --rate 5000 --duration 1 --out /tmp/RESULTS.md   # seconds

The pipeline runs the stages of the tree this is run from (``python -m`` puts it first). Whether the tap
points cost anything while nobody taps needs a tree without them: an A/B by hand, ``--turns none`` from an
export of an older tree with this tree's bench/ and harness/, the compiled parts and a link to the .venv
copied in (there, without the tap points, only that turn runs), and from this one (bench/RESULTS.md shows
how).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import peers, report
from bench.procstat import cpu_seconds, udp_drops
from bench.report import table
from bench.run import command_line, exit_on_sigterm
from harness.paths import REPO, VENV_BIN
from harness.pipeline import Pipeline
from harness.wait import wait_for
from stages.common.process_names import AGGREGATOR, is_process_of
from stages.rundir.figures import read_all

NO_TAP, TOP = "none", "top"
try:
    from stages.common import tap as tap_points
    from stages.rundir import top_request

    WATCHERS: tuple[str, ...] = (*tap_points.WHERE, TOP)
except ImportError:  # a tree from before the tap points (the A/B by hand): only the no-tap turn runs there
    WATCHERS = ()
#: Every turn, in the order a round takes them: nobody watching, a tap at each point, a top.
TURNS = (NO_TAP, *WATCHERS)
BEGIN, END = report.markers("bench/tap_cost.py")
TITLE = "## What `pystatsd tap` and `pystatsd top` cost"
SERIES, PER_DATAGRAM = 20_000, 20
#: How a top asks in its turn: it renews its request every refresh.
TOP_REFRESH_S = 1.0


@dataclass
class TurnRun:
    """One run of the load in one turn."""

    turn: str
    round: int
    sent: int
    #: metrics the receiver counted: what it took in of ``sent``
    received: int
    kernel_drops: int
    offered_per_s: float
    receiver_cpu_s_per_m: float
    pipeline_cpu_s_per_m: float


def receiver_metrics(pipeline: Pipeline) -> int:
    return int(read_all(pipeline.run_dir).get("receiver", {}).get("figures", {}).get("metrics", 0))


def shards_updated(pipeline: Pipeline) -> float:
    """When the last shard to publish its figures last did: they do at each flush."""
    return min((record.get("updated", 0.0) for process, record in read_all(pipeline.run_dir).items()
                if is_process_of(process, AGGREGATOR)), default=0.0)


def next_flush(pipeline: Pipeline) -> None:
    """Waits until every shard flushed once more: what a shard reads once per flush (whether a top asks) is
    read, and each run starts at the same point of the flush interval."""
    since = time.time()
    wait_for(lambda: shards_updated(pipeline) > since, 10, "every shard's next flush", every=0.05)


def one_run(pipeline: Pipeline, turn: str, round_: int, rate: float, duration: float, workdir: Path) -> TurnRun:
    pids = [pid for _, pid in pipeline.status().values() if pid]
    receiver = next(pid for name, (_, pid) in pipeline.status().items() if name.startswith("receiver") and pid)
    before_all, before_receiver = sum(cpu_seconds(pid) for pid in pids), cpu_seconds(receiver)
    metrics_before, drops_before = receiver_metrics(pipeline), udp_drops(pipeline.statsd_port)
    load = peers.run_loadgen(pipeline.statsd_port, rate, duration, PER_DATAGRAM, SERIES, workdir / "loadgen.json",
                             mode="mix")
    sent = int(load["metrics_sent"])
    # The receiver publishes its figures once per interval: until they count what was sent (or stop growing).
    last = [-1]

    def settled() -> bool:
        now = receiver_metrics(pipeline) - metrics_before
        done = now >= sent or now == last[0]
        last[0] = now
        return done

    wait_for(settled, 30, "the receiver's figures to count the run", every=1.5)
    spent_all = sum(cpu_seconds(pid) for pid in pids) - before_all
    spent_receiver = cpu_seconds(receiver) - before_receiver
    return TurnRun(turn, round_, sent, receiver_metrics(pipeline) - metrics_before,
                   udp_drops(pipeline.statsd_port) - drops_before, float(load["achieved_metrics_per_sec"]),
                   round(spent_receiver / sent * 1e6, 3), round(spent_all / sent * 1e6, 3))


def watcher_command(pipeline: Pipeline, turn: str) -> list[str]:
    where = ["top", "--interval", str(TOP_REFRESH_S)] if turn == TOP else ["tap", "--where", turn]
    return [str(VENV_BIN / "pystatsd"), *where, "-c", str(pipeline.config_path), "--run-dir", str(pipeline.run_dir)]


@contextmanager
def watching(pipeline: Pipeline, turn: str) -> Iterator[None]:
    """The turn's watcher, running and heard by the pipeline for the block; nobody for ``none``. Afterwards the
    pipeline has stopped doing what it did for it: a top's request is withdrawn, not left to lapse."""
    if turn == NO_TAP:
        yield
        return
    watcher = subprocess.Popen(watcher_command(pipeline, turn), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=pipeline.env)
    try:
        if turn == TOP:
            wait_for(lambda: (pipeline.run_dir / top_request.REQUEST_FILE).exists() or watcher.poll() is not None, 30,
                     "pystatsd top to ask the shards")
        else:
            assert watcher.stderr is not None
            first = watcher.stderr.readline()
            if "tapping" not in first:
                raise RuntimeError(f"pystatsd tap --where {turn} did not start: {first.strip()}")
        if watcher.poll() is not None:
            raise RuntimeError(f"pystatsd {turn} exited {watcher.returncode}: {watcher.communicate()[1].strip()}")
        yield
    finally:
        watcher.terminate()
        watcher.wait()
        (pipeline.run_dir / top_request.REQUEST_FILE).unlink(missing_ok=True)


def measure(args: argparse.Namespace, workdir: Path) -> list[TurnRun]:
    runs: list[TurnRun] = []
    with Pipeline(flush_interval=1.0) as pipeline:
        # one run unmeasured: the receiver's line cache and the shards' tables meet the mix's series here
        next_flush(pipeline)
        one_run(pipeline, NO_TAP, 0, args.rate, args.duration, workdir)
        for round_ in range(1, args.runs + 1):
            shift = (round_ - 1) % len(args.turns)
            for turn in args.turns[shift:] + args.turns[:shift]:
                with watching(pipeline, turn):
                    next_flush(pipeline)
                    runs.append(one_run(pipeline, turn, round_, args.rate, args.duration, workdir))
                print(json.dumps(asdict(runs[-1])), flush=True)
    return runs


def medians(runs: list[TurnRun]) -> dict[str, dict[str, float]]:
    """Each turn's median figures, and its loss over all its runs (% of what was sent)."""
    out: dict[str, dict[str, float]] = {}
    for turn in dict.fromkeys(run.turn for run in runs):
        mine = [run for run in runs if run.turn == turn]
        sent = sum(run.sent for run in mine)
        out[turn] = {"runs": len(mine), "sent": sent, "received": sum(run.received for run in mine),
                     "loss_pct": 100 * (sent - sum(run.received for run in mine)) / sent if sent else 0.0,
                     "kernel_drops": sum(run.kernel_drops for run in mine),
                     **{key: statistics.median(getattr(run, key) for run in mine)
                        for key in ("offered_per_s", "receiver_cpu_s_per_m", "pipeline_cpu_s_per_m")}}
    return out


def turn_label(turn: str) -> str:
    if turn == NO_TAP:
        return "no tap (the headline's pipeline)"
    return "`pystatsd top` asking" if turn == TOP else f"one tap, `--where {turn}`"


def over_no_tap(figures: dict[str, float], base: dict[str, float] | None) -> str:
    if base is None or not base["pipeline_cpu_s_per_m"]:
        return "–"
    more = figures["pipeline_cpu_s_per_m"] - base["pipeline_cpu_s_per_m"]
    return f"{more:+.2f} ({100 * more / base['pipeline_cpu_s_per_m']:+.0f} %)"


def section(meta: dict[str, Any], runs: list[TurnRun]) -> list[str]:
    """This script's part of bench/RESULTS.md, its markers first and last."""
    per_turn = medians(runs)
    base = per_turn.get(NO_TAP)
    rows = [[turn_label(turn), str(figures["runs"]), f"{figures['offered_per_s']:,.0f}",
             f"{figures['received']:,.0f} of {figures['sent']:,.0f} ({figures['loss_pct']:.2f} %)",
             f"{figures['kernel_drops']:,.0f}", f"{figures['receiver_cpu_s_per_m']:.2f}",
             f"{figures['pipeline_cpu_s_per_m']:.2f}", "" if turn == NO_TAP else over_no_tap(figures, base)]
            for turn, figures in per_turn.items()]
    lines = [BEGIN, TITLE, "", f"Run on {meta['date']}, commit {meta['commit']}:", "", "```sh", meta["command"], "```",
             "",
             f"The harness's pipeline (2 shards, 1 s flush, a file sink) takes bench/loadgen.c's realistic mix "
             f"({PER_DATAGRAM} lines per datagram, {SERIES:,} series) at {meta['rate']:,.0f} metrics/s, "
             f"{meta['duration']:g} s a run, after one run unmeasured. One pipeline serves every turn and the turns "
             f"take turns run by run ({meta['runs']} round(s), each starting one turn later), so a drift in the "
             "machine's speed falls on all alike; figures are each turn's medians, loss and drops its sums. Load "
             f"average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in meta['load_average_before'])} before, "
             f"{', '.join(f'{x:.2f}' for x in meta['load_average_after'])} after.", "",
             "**No tap** is the pipeline as it runs for the headline figures of bench/run.py above: every stage "
             "with its tap points in place (a ZeroMQ PUB socket each) and nobody tapping, no top asking, so the "
             "headline is the cost of pystatsd without a tap. **One tap** listens at one point, "
             "`pystatsd tap --where received|mapped|flushed` with its default sampling (100 metrics/s from each "
             "stage process); **top** asks the shards to sum their busiest names at each flush "
             f"(`pystatsd top --interval {TOP_REFRESH_S:g}`). The watchers' own CPU is not counted: the pipeline's "
             "processes' is. Received is what the receiver counted of what was sent.", "",
             *table(["with", "runs", "offered metrics/s", "received (loss)", "kernel drops",
                     "receiver CPU-s per M", "pipeline CPU-s per M", "pipeline CPU-s per M over no tap"], rows), ""]
    if base is not None and len(per_turn) > 1:
        spread = [run.pipeline_cpu_s_per_m for run in runs if run.turn == NO_TAP]
        worst = max((turn for turn in per_turn if turn != NO_TAP),
                    key=lambda turn: per_turn[turn]["pipeline_cpu_s_per_m"])
        lines += [f"With no tap the pipeline took {base['pipeline_cpu_s_per_m']:.2f} CPU-s per million metrics "
                  f"(runs from {min(spread):.2f} to {max(spread):.2f}); the most with one watcher: "
                  f"{turn_label(worst)}, {over_no_tap(per_turn[worst], base)}. Whether the tap points cost "
                  "anything while nobody taps takes a tree without them: the A/B by hand below.", ""]
    return [*lines, END]


def write_section(out: Path, lines: list[str]) -> None:
    """Replaces this script's part of ``out``; a report without it yet gets it at its end."""
    report.write_between(out, lines, lambda old, block: (old.rstrip("\n") + "\n\n" if old.strip() else "")
                         + block + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=150_000, help="metrics/s of the mix")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of load per run")
    parser.add_argument("--runs", type=int, default=5, help="runs of each turn (rounds)")
    parser.add_argument("--turns", default=",".join(TURNS),
                        help=f"comma-separated, of {', '.join(TURNS)} (default all; none alone for an older tree)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md", help="the report to update")
    parser.add_argument("--json", type=Path, help="also write every run and the medians here as JSON")
    args = parser.parse_args(argv)
    args.turns = [turn for turn in args.turns.split(",") if turn]
    unknown = [turn for turn in args.turns if turn not in TURNS]
    if unknown or not args.turns:
        parser.error(f"--turns: {', '.join(unknown) or 'none given'}: each must be one of {', '.join(TURNS)}")
    if args.runs < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--runs must be at least 1, --rate and --duration above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    if not peers.LOADGEN.exists():  # make bench has built it (bench/build.sh)
        peers.build_loadgen()
    meta: dict[str, Any] = {"date": report.utc_now(), "commit": report.commit(),
                            "command": command_line("bench.tap_cost", sys.argv[1:] if argv is None else argv),
                            "rate": args.rate, "duration": args.duration, "runs": args.runs, "turns": args.turns,
                            "nproc": os.cpu_count(), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="tapcost") as workdir:
        runs = measure(args, Path(workdir))
    meta["load_average_after"] = os.getloadavg()
    lines = section(meta, runs)
    write_section(args.out, lines)
    print("\n".join(lines[1:-1]))
    print(f"report: {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "runs": [asdict(run) for run in runs],
                                         "medians": medians(runs)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
