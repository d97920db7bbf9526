"""Where each pystatsd stage spends its CPU under load: py-spy on every stage at once.

Starts the pipeline the way bench/run.py does, offers one steady load, and records every stage
with py-spy for the same seconds. Prints, per stage, the functions with the most samples on top
of the stack (self time) and in the stack (inclusive time), as a share of the stage's busy
samples (py-spy leaves idle threads out). Needs py-spy in the venv (`pip install py-spy`).

    .venv/bin/python -m bench.stage_profile --rate 200k --per-datagram 20
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import peers
from bench.run import parse_rate, pin_systems_away_from
from bench.systems import PystatsdSystem
from harness.paths import VENV_BIN

PY_SPY = VENV_BIN / "py-spy"
#: py-spy needs a moment to attach before the load it is to see starts.
ATTACH_SECS = 1.0


def record(pid: int, seconds: float, out: Path, cpu: int) -> subprocess.Popen[bytes]:
    """py-spy on the load generator's core, so sampling does not take CPU from the stages."""
    return subprocess.Popen(["taskset", "-c", str(cpu), str(PY_SPY), "record", "-p", str(pid), "-d",
                             str(int(seconds)), "-r", "200", "--nolineno", "-f", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_stacks(path: Path) -> Counter[tuple[str, ...]]:
    """py-spy's raw format: one ``frame;frame;...;leaf count`` line per distinct stack."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        stacks[tuple(frames.split(";"))] += int(count)
    return stacks


def short(frame: str) -> str:
    """``parse_line (stages/receiver/parsers/statsd.py)``: the path from the repo or the stdlib on."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for anchor in ("/stages/", "/site-packages/", "/lib/python3"):
        if anchor in where:
            where = anchor.lstrip("/") + where.split(anchor, 1)[1]
            break
    return f"{name} ({where})" if where else name


def summarize(stage: str, stacks: Counter[tuple[str, ...]], top: int) -> list[str]:
    total = sum(stacks.values())
    if not total:
        return [f"{stage}: no busy samples"]
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks.items():
        own[short(frames[-1])] += count
        for frame in {short(f) for f in frames}:
            inclusive[frame] += count
    lines = [f"## {stage}: {total} busy samples", "", "self %  | inclusive % | function"]
    for frame, count in own.most_common(top):
        lines.append(f"{100 * count / total:6.1f} | {100 * inclusive[frame] / total:11.1f} | {frame}")
    lines += ["", "inclusive % | function (largest subtrees)"]
    for frame, count in inclusive.most_common(top):
        lines.append(f"{100 * count / total:11.1f} | {frame}")
    return lines + [""]


def profile(args: argparse.Namespace, workdir: Path) -> list[str]:
    system = PystatsdSystem(args.shards, args.flush_interval)
    system.start()
    try:
        outputs = {stage: workdir / f"{stage}.txt" for stage in system.stage_pids() if stage != "supervisord"}
        spies = [record(pid, args.duration, outputs[stage], args.load_cpu)
                 for stage, pid in system.stage_pids().items() if stage in outputs]
        time.sleep(ATTACH_SECS)
        peers.run_loadgen(system.target_port(), args.rate, args.duration - ATTACH_SECS, args.per_datagram,
                          args.series, workdir / "loadgen.json", cpu=args.load_cpu)
        for spy in spies:
            spy.wait(timeout=args.duration + 30)
    finally:
        system.stop()
    lines = [f"# py-spy, {args.rate:,.0f} metrics/s, {args.per_datagram} per datagram, {args.shards} shards", ""]
    for stage, path in outputs.items():
        lines += summarize(stage, read_stacks(path), args.top) if path.exists() else [f"{stage}: py-spy wrote nothing"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=parse_rate, default=200_000, help="offered metrics/s")
    parser.add_argument("--per-datagram", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds recorded (load starts 1 s in)")
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--flush-interval", type=float, default=1.0)
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--top", type=int, default=15, help="functions listed per stage")
    parser.add_argument("--keep", type=Path, help="keep py-spy's raw stacks in this directory")
    args = parser.parse_args(argv)
    if not PY_SPY.exists():
        sys.exit(f"{PY_SPY} is missing: .venv/bin/pip install py-spy")
    if not peers.LOADGEN.exists():
        peers.build_loadgen()
    pin_systems_away_from(args.load_cpu)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        print("\n".join(profile(args, args.keep)))
    else:
        with tempfile.TemporaryDirectory(prefix="pstprof") as workdir:
            print("\n".join(profile(args, Path(workdir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
