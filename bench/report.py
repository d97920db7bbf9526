"""The benchmark's report: the machine, the realistic mix first, the targets, the rest, and a plot.

bench/RESULTS.md keeps hand-written analysis (the profile) below the generated part: only the text
between the two markers is replaced, so a new run never loses what a person wrote. Run as a module
it renders the report again from what ``run.py --json`` saved, without measuring anything:

    .venv/bin/python -m bench.report bench/.build/results.json
    .venv/bin/python -m bench.report smoke.json --out /tmp/RESULTS.md     # anywhere else
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from bench import peers
from bench.results import (
    DISTURBED_SHARE,
    HEADLINE,
    LOADS,
    MAX_CATCH_UP_S,
    MAX_LOSS_PCT,
    BenchResults,
    DestinationCheck,
    Load,
    RatePoint,
    RunResult,
    highest_pass,
    load_results,
    loads_of,
    point_at,
    points_of,
    proven_rate,
)
from bench.systems import PYSTATSD_RELAY, PYSTATSD_RULES, PYSTATSD_SINKS, VARIANTS
from harness.paths import REPO


def markers(writer: str) -> tuple[str, str]:
    """The two lines between which ``writer`` (a bench/ script) writes its part of bench/RESULTS.md: each script
    its own pair, so that each replaces only its own part (:func:`write_between`)."""
    return (f"<!-- {writer} writes from here to the end marker; edit outside the markers -->",
            f"<!-- end of what {writer} writes -->")


BEGIN, END = markers("bench/run.py")
PYSTATSD = "pystatsd"

#: pystatsd itself, alone and in its variants (bench/systems.py): never a peer.
OWN = (PYSTATSD, *VARIANTS)
#: Issue 25: with the rule file of a web service plus Airflow, at least this share of the rate without rules.
RULES_SHARE_TARGET = 0.9
RULES_LABEL = "with bench/rules.yaml (50 rules)"
#: Each variant's row beside pystatsd alone: what it adds, and what the row calls pystatsd alone.
VARIANT_ROWS = {
    PYSTATSD_RULES: (RULES_LABEL, "pystatsd without rules"),
    PYSTATSD_SINKS: ("with every new sink on (otlp to an OpenTelemetry Collector, prometheus_remote_write and "
                     "influxdb api_version 2 to VictoriaMetrics, beside the file sink)", "pystatsd alone"),
    PYSTATSD_RELAY: ("with the relay (every line to a UDP socket on loopback that nothing reads)", "pystatsd alone"),
}

#: Issue 12's targets. pystatsd against the best peer's highest loss-free rate, per load:
RATIO_TARGETS = {"mix-20": 3.0, "mix-1": 2.0}
#: CPU-s per million metrics over every pipeline process, at the highest loss-free rate:
CPU_TARGETS = {"mix-20": 1.5}
#: (load, the load it is compared with, the most CPU per metric it may take as a multiple of that one's)
SERIES_CPU_TARGET = ("mix-20-100k", "mix-20", 1.3)
#: (load, every process's peak RSS under it stays below this)
RSS_TARGET = ("mix-20-100k", 80.0)
#: The repeated-counter load's figures before (bench/RESULTS.md of 2026-12-01, d76c8ff), and how far
#: below them a new figure may be.
PREVIOUS_COUNTER_RATES = {"counters-20": 1_600_000.0, "counters-1": 516_000.0}
PREVIOUS_SHARE = 0.9

MIX_DESCRIPTION = (
    "Each line is drawn afresh at random: 50 % counters (value 1), 30 % timers (log-normal milliseconds "
    "with two decimals, median 25 ms, long-tailed), 15 % gauges (0.00-9999.99) and 5 % sets (members from "
    "a million); then one of that kind's series at random, a name with three DogStatsD tags "
    "(`bench.t17:37.80|ms|#env:bench,host:h4,zone:z0`). The generator renders every run's traffic "
    "before it starts (bench/loadgen.c), so no datagram is sent twice. Loss = 1 − (counter increments + "
    "timer samples delivered) / (counter increments + timer samples sent): the sum of every counter "
    "aggregate's value and of every timer aggregate's sample count of the load's names at the system's "
    f"output. A run passes when its loss is under {MAX_LOSS_PCT} % and the system had worked off what it was "
    f"sent within {MAX_CATCH_UP_S:g} s of the load's end (a queue inside it, Telegraf's, could otherwise "
    "hold a backlog it could not have kept up with for longer than the run). Rates and CPU are per metric: "
    "lines of every kind.")
COUNTERS_DESCRIPTION = (
    "The load of the earlier sweeps: counter lines of value 1 over 1,000 series with two DogStatsD tags "
    "(`bench.c17:1|c|#env:bench,shard:1`), 1 s flush, where an earlier receiver counted repeated lines "
    "from a memory of whole lines (gone since: every line is parsed). pystatsd is compared with its own "
    "previous figures here (1,600,000/s at 20 lines per datagram, 516,000/s at 1), so by default only "
    "pystatsd runs it.")

EVERY_POINT_NOTE = (
    "Medians of the deciding runs (a whole-interval run where there is one); the loss columns are those "
    "of the median run. Caught up after: seconds from the load's end until the system had read and "
    f"processed everything (over {MAX_CATCH_UP_S:g} s fails the run). Kernel drops are datagrams the "
    "receiving socket's buffer had no room for (/proc/net/udp) times lines per datagram (metrics of every "
    "kind). Own loss "
    "counters are the system's: pystatsd's `receiver.kernel_drops` (its own reading of the same kernel "
    "figure, in datagrams), `receiver.dropped` and `receiver.bad_lines` (samples), "
    "`aggregator.lost_batches` (batches between receiver and shard), `forwarder.dropped` (aggregates) and "
    "`forwarder.lost_flushes`; statsd_exporter's `udp_packet_drops_total` (datagrams its reader could not "
    "queue; its `sample_errors_total` counts the set lines it has no type for, not a loss of what is "
    "counted); Etsy's `bad_lines_seen`; Telegraf's drops as it logs them (`udp_queue_dropped_logged`: "
    "datagrams its parsers' queue had no room for, a lower bound; `output_buffer_dropped`: metrics). "
    "Counted items lost are counter increments and timer samples sent less delivered, what the loss is "
    "judged on.")

PIPELINE_ORDER = ("receiver", "aggregator", "forwarder", "supervisord")
#: Words in the names of a system's own counters that count something lost.
LOSS_WORDS = ("drop", "lost", "bad_line", "error")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _command_output(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def utc_now() -> str:
    """When a benchmark ran, as its report says it."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def commit() -> str:
    """The commit measured, and whether the code under test differs from it."""
    # bench/ itself may be new or edited; what matters is whether the code under test is the commit's
    changed = _command_output("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench")
    dirty = " (with uncommitted changes outside bench/)" if changed else ""
    return _command_output("git", "rev-parse", "--short", "HEAD") + dirty


def machine(args: argparse.Namespace, command: str, system_cpus: list[int]) -> dict[str, object]:
    """Where and how the benchmark ran, to read its figures against."""
    models = [line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
              if line.startswith("model name")]
    return {
        "date": utc_now(),
        "command": command,
        "nproc": os.cpu_count(),
        "cpu_model": models[0] if models else platform.processor(),
        "kernel": platform.release(),
        "rmem_max": _read("/proc/sys/net/core/rmem_max").strip(),
        "python": platform.python_version(),
        "node": _command_output("node", "--version"),
        "go": _command_output("go", "env", "GOVERSION"),
        "peers": {"etsy": f"statsd@{peers.ETSY_VERSION} (npm)", "telegraf": peers.PEERS["telegraf"].build,
                  "statsd_exporter": peers.PEERS["statsd_exporter"].build},
        "commit": commit(),
        "load_average_before": os.getloadavg(),
        "load_cpu": args.load_cpu,
        "system_cpus": system_cpus,
        "duration": args.duration,
        "repeats": args.repeats,
        "loads": [asdict(load) for load in args.loads],
        "shards": args.shards,
        "sink": args.sink,
        "bisections": args.bisections,
        "retries": args.retries,
        "client_sockets": args.client_sockets,
    }


def stage_group(stage: str) -> str:
    """Shards, and receivers, are one stage each in the tables: ``aggregator-1`` → ``aggregator``."""
    for group in ("aggregator", "receiver"):
        if stage.startswith(f"{group}-"):
            return group
    return stage


def grouped(figures: dict[str, float], combine: Callable[[list[float]], float]) -> dict[str, float]:
    """One figure per stage, in the order data flows through the pipeline."""
    groups: dict[str, list[float]] = {}
    for stage, value in figures.items():
        groups.setdefault(stage_group(stage), []).append(value)
    return {group: combine(groups[group]) for group in sorted(groups, key=pipeline_position)}


def pipeline_position(stage: str) -> tuple[int, str]:
    """Sorts stages (or their groups) as data flows: receiver, shards, forwarder; a peer's one process first."""
    group = stage_group(stage)
    return (PIPELINE_ORDER.index(group) if group in PIPELINE_ORDER else -1, stage)


def in_pipeline_order(figures: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(figures.items(), key=lambda item: pipeline_position(item[0]))


def stage_cpu_per_million(run: RunResult) -> dict[str, float]:
    cpu = grouped(run.cpu_seconds, sum)
    delivered = run.metrics_delivered
    return {stage: 1e6 * seconds / delivered if delivered else float("inf") for stage, seconds in cpu.items()}


def kernel_drops_metrics(run: RunResult) -> float:
    """Datagrams the receiving socket had no room for, in metrics."""
    return float(run.kernel_drops * run.per_datagram)


def own_losses(run: RunResult) -> str:
    """The system's own nonzero loss counters in this run, as it names them (units are its own)."""
    lost = {name.removeprefix("pystatsd.").removeprefix("statsd_exporter_"): value
            for name, value in run.losses.items() if value and any(word in name for word in LOSS_WORDS)}
    return ", ".join(f"{name} {value:,.0f}" for name, value in sorted(lost.items())) or "none"


def rate(value: float) -> str:
    return f"{value:,.0f}"


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}×" if mine and theirs else "–"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def loads_in(results: BenchResults) -> list[Load]:
    """The loads measured, as the run described them (older results: one per datagram size)."""
    described = loads_of(results.meta)
    names = list(dict.fromkeys(p.load for p in results.sweep))
    return [load for load in described if load.name in names]


def systems_of(results: BenchResults, load: str) -> list[str]:
    """The systems measured under the load, pystatsd first."""
    return sorted(dict.fromkeys(p.system for p in results.sweep if p.load == load), key=lambda s: s not in OWN)


def best_point(results: BenchResults, system: str, load: str) -> RatePoint | None:
    best = highest_pass(results.sweep, system, load)
    return point_at(results.sweep, system, load, best) if best else None


def first_fail(results: BenchResults, system: str, load: str) -> RatePoint | None:
    return next((p for p in points_of(results.sweep, system, load) if not p.passed), None)


def proven(results: BenchResults, system: str, load: str) -> float:
    """The system's highest passing rate as measured (what the generator offered when it fell short); 0 if none."""
    best = best_point(results, system, load)
    return proven_rate(best) if best else 0.0


def best_peer(results: BenchResults, load: str) -> str | None:
    """The peer with the highest loss-free rate under the load; None without peers or passes."""
    rated = [(proven(results, system, load), system) for system in systems_of(results, load) if system not in OWN]
    top = max(rated, default=(0.0, None))
    return top[1] if top[0] else None


def cpu_at_best(results: BenchResults, system: str, load: str) -> float | None:
    best = best_point(results, system, load)
    return best.median(lambda r: r.cpu_per_million()) if best else None


def peak_rss(point: RatePoint) -> dict[str, float]:
    """Peak RSS (VmHWM) per process over the point's runs, shards and receivers as their largest."""
    every: dict[str, float] = {}
    for run in point.runs:
        for stage, mib in run.peak_rss_mib.items():
            every[stage] = max(every.get(stage, 0.0), mib)
    return grouped(every, max)


def rss_cell(point: RatePoint) -> str:
    figures = peak_rss(point)
    if len(figures) == 1:
        return f"{next(iter(figures.values())):.1f}"
    return ", ".join(f"{stage} {mib:.1f}" for stage, mib in figures.items())


def load_table(results: BenchResults, load: Load) -> list[str]:
    """One load: every system's highest loss-free rate, its cost there, and how it compares."""
    peer = best_peer(results, load.name)
    peer_rate = proven(results, peer, load.name) if peer else 0.0
    previous = PREVIOUS_COUNTER_RATES.get(load.name)
    rows = []
    for system in systems_of(results, load.name):
        best = best_point(results, system, load.name)
        fail = first_fail(results, system, load.name)
        mine = proven(results, system, load.name)
        bound = "≥ " if best and best.generator_limited else ""
        row = [
            system,
            f"{bound}{rate(mine)}" if best else "none passed",
            rate(best.median(lambda r: r.delivered_per_sec)) if best else "–",
            f"{best.median(lambda r: r.cpu_per_million()):.2f}" if best else "–",
            rss_cell(best) if best else "–",
            f"{rate(fail.target_rate)} ({fail.median(lambda r: r.loss_pct):.2f} %)" if fail else "none failed",
        ]
        if peer:
            row.append(ratio(mine, peer_rate))
        if previous:
            row.append(ratio(mine, previous) if system == PYSTATSD else "–")
        rows.append(row)
    header = ["system", f"highest rate < {MAX_LOSS_PCT} % loss (metrics/s)", "delivered/s there",
              "CPU-s per M metrics (every process)", "peak RSS per process (MiB)", "first failing rate (median loss)"]
    if peer:
        header.append(f"× best peer ({peer})")
    if previous:
        header.append(f"× previous ({rate(previous)})")
    return [f"### {load.describe()[0].upper()}{load.describe()[1:]}", "", *table(header, rows), ""]


def ratio_row(results: BenchResults, label: str, load: str, system: str, other: str | None,
              other_label: str | None = None) -> list[str]:
    """``system``'s highest loss-free rate under ``load`` beside ``other``'s, their ratio, and each one's CPU."""
    mine = proven(results, system, load)
    theirs = proven(results, other, load) if other else 0.0
    mine_cpu = cpu_at_best(results, system, load)
    their_cpu = cpu_at_best(results, other, load) if other else None
    return [label, rate(mine) if mine else "none passed", other_label or other or "–",
            rate(theirs) if theirs else "–", ratio(mine, theirs),
            f"{mine_cpu:.2f}" if mine_cpu is not None else "–",
            f"{their_cpu:.2f}" if their_cpu is not None else "–"]


def ratio_rows(results: BenchResults, loads: list[Load]) -> list[list[str]]:
    """Per load, pystatsd beside the best peer; where a variant (pystatsd-rules, -sinks, -relay) ran, a row of it
    beside pystatsd alone."""
    rows = []
    for load in loads:
        rows.append(ratio_row(results, load.describe(), load.name, PYSTATSD, best_peer(results, load.name)))
        for variant, (label, alone) in VARIANT_ROWS.items():
            if points_of(results.sweep, variant, load.name):
                rows.append(ratio_row(results, f"{load.describe()}, {label}", load.name, variant, PYSTATSD, alone))
    return rows


def destination_lines(checks: list[DestinationCheck]) -> list[str]:
    """pystatsd-sinks' servers read back once each load was over, against its file sink."""
    if not checks:
        return []
    lines = ["Each server pystatsd-sinks wrote to, read back once the load was over (from its last start), against "
             "its file sink, in counter increments plus timer samples of the load's names:", ""]
    for check in checks:
        if check.error:
            lines.append(f"- {check.system}, {check.load}: the file sink {rate(check.delivered)}; the servers could "
                         f"not be read back: {check.error}")
            continue
        held = ", ".join(f"{name} {rate(value)}" for name, value in check.received.items())
        lines.append(f"- {check.system}, {check.load}: the file sink {rate(check.delivered)}; {held}: "
                     + ("each holds all of it." if check.exact else "**not all of it**."))
    return [*lines, ""]


def verdict(met: bool, shortfall: str) -> str:
    return "**met**" if met else f"**missed**: {shortfall}"


def describe(results: BenchResults, name: str) -> str:
    """The load as measured, or as the default sweep defines it."""
    load = next((load for load in loads_in(results) if load.name == name), LOADS.get(name))
    return load.describe() if load else name


def target_rows(results: BenchResults) -> list[list[str]]:
    rows = []
    for load, wanted in RATIO_TARGETS.items():
        label = f"{describe(results, load)}: ≥ {wanted:g}× the best peer's loss-free rate"
        peer = best_peer(results, load)
        mine, theirs = proven(results, PYSTATSD, load), proven(results, peer, load) if peer else 0.0
        if not (mine and theirs):
            rows.append([label, "not measured", "–"])
            continue
        got = mine / theirs
        rows.append([label, f"{got:.2f}× ({rate(mine)} vs {peer}'s {rate(theirs)} metrics/s)",
                     verdict(got >= wanted, f"pystatsd needs {wanted / got:.2f}× its rate "
                                            f"({rate(wanted * theirs)} metrics/s)")])
    if points_of(results.sweep, PYSTATSD_RULES, HEADLINE):
        label = (f"{describe(results, HEADLINE)}, {RULES_LABEL}: ≥ {RULES_SHARE_TARGET:.0%} of the rate without "
                 "(issue 25)")
        ruled, plain = proven(results, PYSTATSD_RULES, HEADLINE), proven(results, PYSTATSD, HEADLINE)
        if not (ruled and plain):
            rows.append([label, "not measured", "–"])
        else:
            got = ruled / plain
            rows.append([label, f"{got:.0%} ({rate(ruled)} vs {rate(plain)} metrics/s)",
                         verdict(got >= RULES_SHARE_TARGET, f"{rate(RULES_SHARE_TARGET * plain - ruled)} "
                                                            "metrics/s short")])
    for load, wanted in CPU_TARGETS.items():
        label = f"{describe(results, load)}: ≤ {wanted:g} CPU-s per M metrics"
        got = cpu_at_best(results, PYSTATSD, load)
        if got is None:
            rows.append([label, "not measured", "–"])
            continue
        rows.append([label, f"{got:.2f} (every pipeline process, at {rate(proven(results, PYSTATSD, load))}/s)",
                     verdict(got <= wanted, f"{got / wanted:.2f}× the budget, "
                                            f"{got - wanted:.2f} CPU-s per M too many")])
    load, base, wanted = SERIES_CPU_TARGET
    label = (f"{describe(results, load)}: CPU per metric ≤ {wanted:g}× that at "
             f"{LOADS[base].series:,} series" if base in LOADS else base)
    got, then = cpu_at_best(results, PYSTATSD, load), cpu_at_best(results, PYSTATSD, base)
    if got is None or not then:
        rows.append([label, "not measured", "–"])
    else:
        rows.append([label, f"{got / then:.2f}× ({got:.2f} vs {then:.2f} CPU-s per M, each at its highest "
                            "loss-free rate)",
                     verdict(got <= wanted * then, f"{got / then / wanted:.2f}× the allowance")])
    load, limit = RSS_TARGET
    label = f"{describe(results, load)}: every process < {limit:g} MiB RSS"
    points = points_of(results.sweep, PYSTATSD, load)
    if not points:
        rows.append([label, "not measured", "–"])
    else:
        largest = max(((stage, mib) for point in points for stage, mib in peak_rss(point).items()),
                      key=lambda item: item[1])
        rows.append([label, f"largest: {largest[0]} {largest[1]:.1f} MiB (peak over every rate run)",
                     verdict(largest[1] < limit, f"{largest[1] - limit:.1f} MiB over")])
    for load, before in PREVIOUS_COUNTER_RATES.items():
        floor = PREVIOUS_SHARE * before
        label = f"{describe(results, load)}: within {1 - PREVIOUS_SHARE:.0%} of {rate(before)}/s or better"
        mine = proven(results, PYSTATSD, load)
        if not points_of(results.sweep, PYSTATSD, load):
            rows.append([label, "not measured", "–"])
            continue
        rows.append([label, f"{rate(mine)} ({ratio(mine, before)} the previous figure)",
                     verdict(mine >= floor, f"{rate(floor - mine)} metrics/s short of {rate(floor)}")])
    return rows


def per_stage(results: BenchResults) -> list[str]:
    rows = []
    for load in loads_in(results):
        best = best_point(results, PYSTATSD, load.name)
        if best is None:
            continue
        cpu = {stage: best.median(lambda r, s=stage: stage_cpu_per_million(r)[s])
               for stage in stage_cpu_per_million(best.runs[0])}
        rss = peak_rss(best)
        for stage in cpu:
            rows.append([load.name, rate(proven_rate(best)), stage, f"{cpu[stage]:.3f}", f"{rss[stage]:.1f}"])
        rows.append([load.name, rate(proven_rate(best)), "**total**", f"{sum(cpu.values()):.3f}", ""])
    header = ["load", "rate (metrics/s)", "stage", "CPU-s per M metrics (median)",
              "peak RSS MiB (largest process of the stage)"]
    return table(header, rows)


def scaling(results: BenchResults, nproc: object, system_cpus: object) -> list[str]:
    if not results.scaling:
        return ["Not run."]
    rows = []
    for point in results.scaling:
        cpu = point.median(lambda r: sum(r.cpu_seconds.values()))
        elapsed = point.median(lambda r: r.elapsed)
        delivered = point.median(lambda r: r.metrics_delivered)
        rows.append([str(point.shards), str(point.receivers), rate(point.target_rate),
                     rate(point.median(lambda r: r.delivered_per_sec)),
                     f"{point.median(lambda r: r.loss_pct):.3f}", f"{cpu / elapsed:.2f}",
                     rate(delivered / cpu) if cpu else "–"])
    header = ["shards", "receivers", "offered (metrics/s)", "delivered/s (median)", "loss %",
              "busy cores (CPU-s per second of load)", "metrics/s per busy core"]
    note = (f"Under {describe(results, results.scaling[0].load)}, one run each. This machine has {nproc} "
            f"cores and the systems run on {system_cpus} (the load generator has the other), so every shard "
            "and receiver shares the same core with the others and the forwarder: absolute throughput cannot "
            "grow with shards or receivers here. The per-busy-core figure (metrics delivered per CPU-second of "
            "every pipeline process) shows what each extra process costs; on a machine with a core per "
            "process the absolute rate is what would scale. Extra receivers share the port through "
            "SO_REUSEPORT; the kernel gives each a share of the load generator's source sockets.")
    return [note, "", *table(header, rows)]


def idle_rows(results: BenchResults) -> list[list[str]]:
    return [[i.system, f"{sum(i.cpu_pct_of_core.values()):.2f}",
             ", ".join(f"{stage} {pct:.2f}" for stage, pct in in_pipeline_order(i.cpu_pct_of_core)),
             ", ".join(f"{stage} {mib:.1f}" for stage, mib in in_pipeline_order(i.peak_rss_mib))]
            for i in results.idle]


def every_point(results: BenchResults) -> list[str]:
    order = {load.name: index for index, load in enumerate(loads_in(results))}
    rows = []
    for point in sorted(results.sweep, key=lambda p: (order.get(p.load, len(order)), p.system, p.target_rate)):
        run = point.median_run()
        rows.append([
            point.load, point.system, rate(point.target_rate),
            rate(point.median(lambda r: r.offered_per_sec)), rate(point.median(lambda r: r.delivered_per_sec)),
            f"{point.median(lambda r: r.loss_pct):.3f}", f"{point.median(lambda r: r.catch_up_s):.1f}",
            "pass" if point.passed else "fail",
            rate(kernel_drops_metrics(run)), own_losses(run),
            rate(run.sent - run.delivered), f"{point.median(lambda r: r.cpu_per_million()):.2f}",
            " ".join(f"{r.loss_pct:.2f}{' (whole interval)' if r.whole_interval else ''}"
                     f"{' (ring wrapped: datagrams sent twice)' if r.ring_wrapped else ''}" for r in point.runs),
            " ".join(f"{100 * r.foreign_cpu_share:.0f}" for r in point.runs),
        ])
    header = ["load", "system", "target/s", "offered/s", "delivered/s", "loss %", "caught up after (s)", "verdict",
              "kernel drops (metrics)", "own loss counters", "counted items lost", "CPU-s per M",
              "loss % of each run", "other processes' % of the cores, each run"]
    return table(header, rows)


def sections(results: BenchResults) -> tuple[list[Load], list[Load]]:
    """The mix's loads (the headline first) and the repeated-counter loads."""
    loads = loads_in(results)
    mix = sorted((load for load in loads if load.mode == "mix"), key=lambda load: load.name != HEADLINE)
    return mix, [load for load in loads if load.mode != "mix"]


def header(meta: dict) -> list[str]:
    load_before, load_after = meta["load_average_before"], meta.get("load_average_after", ("?",) * 3)
    peer_builds = "; ".join(f"{name} {build}" for name, build in meta.get("peers", {}).items())
    return [
        f"Run on {meta['date']}, {meta['minutes']} minutes, commit {meta['commit']}:",
        "",
        "```sh",
        str(meta["command"]),
        "```",
        "",
        f"- Machine: {meta['nproc']} cores, {meta['cpu_model']}, Linux {meta['kernel']}, Python {meta['python']}, "
        f"node {meta['node']}, {meta.get('go', 'go')}; `net.core.rmem_max` = {meta['rmem_max']} (a receive buffer "
        "asked for beyond it is capped to it). Peers: " + (peer_builds or "–") + ".",
        f"- Load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' if isinstance(x, float) else x for x in load_after)} after.",
        f"- The load generator runs on core {meta['load_cpu']} (`taskset`); every system under test, all its "
        f"processes, on cores {meta['system_cpus']}. {meta['duration']} s of load per run from "
        f"{meta.get('client_sockets', 1)} source sockets; every system flushes at the load's interval; pystatsd "
        f"runs {meta['shards']} shards and its {meta['sink']} sink; Telegraf's config is TELEGRAF_CONF in "
        "bench/peers.py.",
        "- The search: one run per rate, doubling (or halving) from a start rate until one rate passes and the "
        f"next fails, then {meta['bisections']} bisection(s) (from a start taken from an earlier load's result: "
        "steps of √2 and one bisection fewer), so a highest rate is known to within a factor "
        f"{2 ** (1 / 2 ** meta['bisections']):.2f}. Then the highest pass is confirmed (a failed confirmation "
        "moves down): under a flush interval longer than a run by one run over a whole interval, aligned to the "
        "system's flushes, whose figures are the point's (a short run shares one or two flushes among a few "
        "seconds of data: several times a steady load's flush cost per metric); otherwise by "
        f"{meta['repeats']} runs in all, the median deciding. All systems run at once and take turns run "
        "by run, so a drift in the machine's speed falls on all alike. After each run the runner waits for the "
        "system's flush: until everything arrived, or until a heartbeat gauge sent once it had read "
        "everything arrived too.",
        f"- The machine is shared: a run during whose load other processes took more than {DISTURBED_SHARE:.0%} "
        f"of the systems' cores (user time from /proc/stat, less the systems' and the runner's own) was "
        f"repeated, {meta['runs_repeated']} times in all (at most {meta['retries']} times per run; a run still "
        "disturbed then is kept and shows in the last column of the last table).",
        "",
    ]


def generated(results: BenchResults, plot_name: str) -> list[str]:
    meta = results.meta
    mix, counters = sections(results)
    lines = [BEGIN, *header(meta)]
    if mix:
        lines += ["## The realistic mix", "", MIX_DESCRIPTION, "",
                  "### Ratios to the best peer", "",
                  *table(["load", "pystatsd (metrics/s)", "best peer", "its rate", "pystatsd ÷ best peer",
                          "pystatsd CPU-s per M", "best peer's CPU-s per M"], ratio_rows(results, mix)), "",
                  *destination_lines(results.destinations)]
        for load in mix:
            lines += load_table(results, load)
    lines += [f"![offered vs delivered, and CPU per million metrics]({plot_name})", "",
              "## Targets (issue 12)", "", *table(["target", "measured", "verdict"], target_rows(results)), ""]
    if counters:
        lines += ["## The repeated-counter load (secondary)", "", COUNTERS_DESCRIPTION, ""]
        for load in counters:
            lines += load_table(results, load)
    lines += ["## pystatsd per stage at its highest passing rate", "", *per_stage(results), "",
              "## Scaling (pystatsd)", "", *scaling(results, meta["nproc"], meta["system_cpus"]), "",
              "## Idle and memory", "",
              "CPU with no traffic (1 s flush, after start-up), then peak RSS (VmHWM) of each process once 1,000 "
              "series (a quarter each counters, gauges, timers, sets) went through.", "",
              *table(["system", "idle % of a core", "per process (%)", "peak RSS per process (MiB)"],
                     idle_rows(results)), "",
              "## Every rate measured", "",
              EVERY_POINT_NOTE, "",
              *every_point(results), "", END]
    return lines


def write_between(out: Path, lines: list[str], missing: Callable[[str, str], str]) -> None:
    """Puts ``lines`` (a script's part: its two :func:`markers` first and last) in place of that script's part of
    ``out``, keeping everything outside those markers; where they are not in ``out`` yet, ``missing(old text,
    part)`` makes the whole text."""
    begin, end, block = lines[0], lines[-1], "\n".join(lines)
    old = out.read_text() if out.exists() else ""
    start = old.find(begin)
    stop = old.find(end, start) if start >= 0 else -1
    out.write_text(old[:start] + block + old[stop + len(end):] if stop >= 0 else missing(old, block))


def write(results: BenchResults, out: Path, plot_path: Path) -> None:
    """Writes the plot and the report, keeping whatever is outside the markers of an existing report."""
    plot(results, plot_path)
    write_between(out, generated(results, os.path.relpath(plot_path, out.parent)),
                  lambda _, block: f"# Benchmark results\n\n{block}\n\n## Profile\n\nNot written yet.\n")


def summary_table(results: BenchResults) -> str:
    mix, counters = sections(results)
    lines = table(["load", "pystatsd (metrics/s)", "best peer", "its rate", "pystatsd ÷ best peer",
                   "pystatsd CPU-s per M", "best peer's CPU-s per M"], ratio_rows(results, mix + counters))
    return "\n".join([*lines, "", *table(["target", "measured", "verdict"], target_rows(results))])


def plot(results: BenchResults, path: Path) -> None:
    import matplotlib  # the bench extra; only a full run needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    per_second = FuncFormatter(lambda value, _: f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:,.0f}k")
    mix, counters = sections(results)
    loads = mix + counters
    # one colour per system in every panel
    systems = list(dict.fromkeys(system for load in loads for system in systems_of(results, load.name)))
    colour = {system: f"C{index}" for index, system in enumerate(systems)}
    figure, axes = plt.subplots(2, max(1, len(loads)), figsize=(5 * max(1, len(loads)), 9), squeeze=False)
    for column, load in enumerate(loads):
        top, bottom = axes[0][column], axes[1][column]
        for system in systems_of(results, load.name):
            points = points_of(results.sweep, system, load.name)
            offered = [p.median(lambda r: r.offered_per_sec) for p in points]
            delivered = [p.median(lambda r: r.delivered_per_sec) for p in points]
            # a run that delivered nothing has no CPU per metric: leave a gap, not an infinity
            cpu = [p.median(lambda r: r.cpu_per_million()) if p.median(lambda r: r.delivered) else math.nan
                   for p in points]
            top.plot(offered, delivered, "o-", color=colour[system], label=system)
            bottom.plot(offered, cpu, "o-", color=colour[system], label=system)
            failed = [i for i, p in enumerate(points) if not p.passed]
            top.plot([offered[i] for i in failed], [delivered[i] for i in failed], "x", color="black", ms=9)
        ceiling = max((p.median(lambda r: r.offered_per_sec) for p in results.sweep if p.load == load.name),
                      default=1.0)
        top.plot([0, ceiling], [0, ceiling], ":", color="grey", label="delivered = offered")
        title = load.describe().replace(", ", "\n", 1)
        top.set(title=f"{title}\n(x: median loss ≥ {MAX_LOSS_PCT} %)", xlabel="offered metrics/s",
                ylabel="delivered metrics/s")
        bottom.set(title="CPU-s per million metrics, every process", xlabel="offered metrics/s",
                   ylabel="CPU-seconds per million metrics")
        bottom.set_ylim(bottom=0)
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
            ax.xaxis.set_major_formatter(per_second)
        top.yaxis.set_major_formatter(per_second)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the benchmark report again from run.py --json output.")
    parser.add_argument("results", type=Path, help="the JSON run.py --json wrote")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md", help="the report to update")
    args = parser.parse_args(argv)
    results = load_results(json.loads(args.results.read_text()))
    write(results, args.out, args.out.with_name("results.png"))
    print(summary_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
