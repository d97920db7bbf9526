"""The benchmark's report: the machine, the tables, the targets, and a plot.

bench/RESULTS.md keeps hand-written analysis (the profile) below the generated part: only the text
between the two markers is replaced, so a new run never loses what a person wrote. Run as a script
it renders the report again from what ``run.py --json`` saved, without measuring anything:

    .venv/bin/python bench/report.py bench/.build/results.json
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: bench/ is sys.path[0], the repo is not
    sys.path.insert(0, str(REPO))

from bench.results import (  # noqa: E402
    DISTURBED_SHARE,
    BenchResults,
    IdleResult,
    RatePoint,
    RunResult,
    highest_pass,
    load_results,
    point_at,
    points_of,
    proven_rate,
)

BEGIN = "<!-- bench/run.py writes from here to the end marker; edit outside the markers -->"
END = "<!-- end of what bench/run.py writes -->"
BASELINE = "etsy-tuned"

#: Issue 5's targets.
RATIO_TARGETS = {20: 1.5, 1: 1.3}
CPU_TARGETS = {20: 0.5, 1: 2.0}
IDLE_TARGET_PCT = 1.0
RSS_TARGET_MIB = 40.0
#: How the header describes each load generator mode (bench/loadgen.c).
LOAD_MODES = {"counters": "Counters",
              "mix": "A mix of 50 % counters (increments 1 to 5), 25 % timers, 15 % gauges and 10 % sets"}

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


def machine(args: argparse.Namespace, command: str, system_cpus: list[int]) -> dict[str, object]:
    """Where and how the benchmark ran, to read its figures against."""
    models = [line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
              if line.startswith("model name")]
    # bench/ itself may be new or edited; what matters is whether the code under test is the commit's
    changed = _command_output("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench")
    dirty = " (with uncommitted changes outside bench/)" if changed else ""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "nproc": os.cpu_count(),
        "cpu_model": models[0] if models else platform.processor(),
        "kernel": platform.release(),
        "rmem_max": _read("/proc/sys/net/core/rmem_max").strip(),
        "python": platform.python_version(),
        "node": _command_output("node", "--version"),
        "commit": _command_output("git", "rev-parse", "--short", "HEAD") + dirty,
        "load_average_before": os.getloadavg(),
        "load_cpu": args.load_cpu,
        "system_cpus": system_cpus,
        "duration": args.duration,
        "repeats": args.repeats,
        "series": args.series,
        "mode": args.mode,
        "untagged": args.untagged,
        "flush_interval": args.flush_interval,
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
    return {stage: 1e6 * seconds / run.delivered if run.delivered else float("inf") for stage, seconds in cpu.items()}


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


def systems_of(results: BenchResults) -> list[str]:
    return list(dict.fromkeys(p.system for p in results.sweep))


def sizes_of(results: BenchResults) -> list[int]:
    return list(dict.fromkeys(p.per_datagram for p in results.sweep))


def best_point(results: BenchResults, system: str, per_datagram: int) -> RatePoint | None:
    best = highest_pass(results.sweep, system, per_datagram)
    return point_at(results.sweep, system, per_datagram, best) if best else None


def first_fail(results: BenchResults, system: str, per_datagram: int) -> RatePoint | None:
    return next((p for p in points_of(results.sweep, system, per_datagram) if not p.passed), None)


def proven(results: BenchResults, system: str, per_datagram: int) -> float:
    """The system's highest passing rate as measured (what the generator offered when it fell short); 0 if none."""
    best = best_point(results, system, per_datagram)
    return proven_rate(best) if best else 0.0


def headline(results: BenchResults, per_datagram: int) -> list[str]:
    baseline = proven(results, BASELINE, per_datagram)
    shipped = proven(results, "etsy", per_datagram)
    rows = []
    for system in systems_of(results):
        best = best_point(results, system, per_datagram)
        fail = first_fail(results, system, per_datagram)
        mine = proven(results, system, per_datagram)
        bound = "≥ " if best and best.generator_limited else ""
        rows.append([
            system,
            f"{bound}{rate(mine)}" if best else "none passed",
            rate(best.median(lambda r: r.delivered_per_sec)) if best else "–",
            f"{best.median(lambda r: r.cpu_per_million()):.2f}" if best else "–",
            f"{max(max(r.peak_rss_mib.values()) for r in best.runs):.1f}" if best else "–",
            f"{rate(fail.target_rate)} ({fail.median(lambda r: r.loss_pct):.2f} %)" if fail else "none failed",
            ratio(mine, shipped),
            ratio(mine, baseline),
        ])
    header = ["system", "highest rate < 0.1 % loss (metrics/s)", "delivered/s there", "CPU-s per M metrics",
              "largest peak RSS (MiB)", "first failing rate (median loss)", "× etsy", f"× {BASELINE}"]
    return [f"### {per_datagram} metric{'s' if per_datagram > 1 else ''} per datagram", "", *table(header, rows), ""]


def verdict(met: bool, shortfall: str) -> str:
    return "**met**" if met else f"**missed**: {shortfall}"


def target_rows(results: BenchResults) -> list[list[str]]:
    rows = []
    for per_datagram, wanted in RATIO_TARGETS.items():
        mine = proven(results, "pystatsd", per_datagram)
        theirs = proven(results, BASELINE, per_datagram)
        if not (mine and theirs):
            rows.append([f"{per_datagram}/datagram ≥ {wanted}× {BASELINE}", "not measured", "–"])
            continue
        got = mine / theirs
        rows.append([f"{per_datagram}/datagram ≥ {wanted}× {BASELINE}",
                     f"{got:.2f}× ({rate(mine)} vs {rate(theirs)} metrics/s)",
                     verdict(got >= wanted, f"pystatsd needs {wanted / got:.2f}× its rate "
                                            f"({rate(wanted * theirs)} metrics/s)")])
    for per_datagram, wanted in CPU_TARGETS.items():
        best = best_point(results, "pystatsd", per_datagram)
        if best is None:
            rows.append([f"≤ {wanted} CPU-s per M metrics at {per_datagram}/datagram", "not measured", "–"])
            continue
        got = best.median(lambda r: r.cpu_per_million())
        rows.append([f"≤ {wanted} CPU-s per M metrics at {per_datagram}/datagram",
                     f"{got:.2f} (every pipeline process, at {rate(proven_rate(best))}/s)",
                     verdict(got <= wanted, f"{got / wanted:.2f}× the budget, "
                                            f"{got - wanted:.2f} CPU-s per M too many")])
    idle = next((i for i in results.idle if i.system == "pystatsd"), None)
    if idle:
        pct = sum(idle.cpu_pct_of_core.values())
        rows.append([f"idle < {IDLE_TARGET_PCT} % of a core", f"{pct:.2f} %",
                     verdict(pct < IDLE_TARGET_PCT, f"{pct / IDLE_TARGET_PCT:.1f}× the budget")])
        stage, mib = max(idle.peak_rss_mib.items(), key=lambda item: item[1])
        rows.append([f"≤ {RSS_TARGET_MIB:.0f} MiB RSS per process with 1,000 series",
                     f"largest: {stage} {mib:.1f} MiB (peak)",
                     verdict(mib <= RSS_TARGET_MIB, f"{mib - RSS_TARGET_MIB:.1f} MiB over")])
    return rows


def per_stage(results: BenchResults) -> list[str]:
    rows = []
    for per_datagram in sizes_of(results):
        best = best_point(results, "pystatsd", per_datagram)
        if best is None:
            continue
        cpu = {stage: best.median(lambda r, s=stage: stage_cpu_per_million(r)[s])
               for stage in stage_cpu_per_million(best.runs[0])}
        rss = grouped(best.median_run().peak_rss_mib, max)
        for stage in cpu:
            rows.append([str(per_datagram), rate(proven_rate(best)), stage, f"{cpu[stage]:.3f}", f"{rss[stage]:.1f}"])
        rows.append([str(per_datagram), rate(proven_rate(best)), "**total**", f"{sum(cpu.values()):.3f}", ""])
    header = ["per datagram", "rate (metrics/s)", "stage", "CPU-s per M metrics (median)",
              "peak RSS MiB (largest process of the stage)"]
    return table(header, rows)


def scaling(results: BenchResults, nproc: object, system_cpus: object) -> list[str]:
    if not results.scaling:
        return ["Not run."]
    rows = []
    for point in results.scaling:
        cpu = point.median(lambda r: sum(r.cpu_seconds.values()))
        elapsed = point.median(lambda r: r.elapsed)
        delivered = point.median(lambda r: r.delivered)
        rows.append([str(point.shards), str(point.receivers), rate(point.target_rate),
                     rate(point.median(lambda r: r.delivered_per_sec)),
                     f"{point.median(lambda r: r.loss_pct):.3f}", f"{cpu / elapsed:.2f}",
                     rate(delivered / cpu) if cpu else "–"])
    header = ["shards", "receivers", "offered (metrics/s)", "delivered/s (median)", "loss %",
              "busy cores (CPU-s per second of load)", "metrics/s per busy core"]
    note = (f"This machine has {nproc} cores and the systems run on {system_cpus} (the load generator has the "
            "other), so every shard and receiver shares the same core with the others and the forwarder: "
            "absolute throughput cannot grow with shards or receivers here. The per-busy-core figure (metrics "
            "delivered per CPU-second of every pipeline process) shows what each extra process costs; on a "
            "machine with a core per process the absolute rate is what would scale. Extra receivers share the "
            "port through SO_REUSEPORT; the kernel gives each a share of the load generator's source sockets.")
    return [note, "", *table(header, rows)]


def idle_rows(idle: list[IdleResult]) -> list[list[str]]:
    return [[i.system, f"{sum(i.cpu_pct_of_core.values()):.2f}",
             ", ".join(f"{stage} {pct:.2f}" for stage, pct in in_pipeline_order(i.cpu_pct_of_core)),
             ", ".join(f"{stage} {mib:.1f}" for stage, mib in in_pipeline_order(i.peak_rss_mib))] for i in idle]


def every_point(results: BenchResults) -> list[str]:
    rows = []
    for point in sorted(results.sweep, key=lambda p: (-p.per_datagram, p.system, p.target_rate)):
        run = point.median_run()
        rows.append([
            point.system, str(point.per_datagram), rate(point.target_rate),
            rate(point.median(lambda r: r.offered_per_sec)), rate(point.median(lambda r: r.delivered_per_sec)),
            f"{point.median(lambda r: r.loss_pct):.3f}", "pass" if point.passed else "fail",
            rate(kernel_drops_metrics(run)), own_losses(run),
            rate(run.sent - run.delivered - kernel_drops_metrics(run)),
            f"{point.median(lambda r: r.cpu_per_million()):.2f}",
            " ".join(f"{r.loss_pct:.2f}" for r in point.runs),
            " ".join(f"{100 * r.foreign_cpu_share:.0f}" for r in point.runs),
        ])
    header = ["system", "per dgram", "target/s", "offered/s", "delivered/s", "loss %", "verdict",
              "kernel drops (metrics)", "own loss counters", "lost past the kernel (metrics)", "CPU-s per M",
              "loss % of each run", "other processes' % of the cores, each run"]
    return table(header, rows)


def generated(results: BenchResults, plot_name: str) -> list[str]:
    meta = results.meta
    load_before, load_after = meta["load_average_before"], meta.get("load_average_after", ("?",) * 3)
    lines = [
        BEGIN,
        f"Run on {meta['date']}, {meta['minutes']} minutes, commit {meta['commit']}:",
        "",
        "```sh",
        str(meta["command"]),
        "```",
        "",
        f"- Machine: {meta['nproc']} cores, {meta['cpu_model']}, Linux {meta['kernel']}, Python {meta['python']}, "
        f"node {meta['node']}; `net.core.rmem_max` = {meta['rmem_max']} (a receive buffer asked for beyond it is "
        "capped to it).",
        f"- Load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' if isinstance(x, float) else x for x in load_after)} after.",
        f"- The load generator runs on core {meta['load_cpu']} (`taskset`); every system under test, all its "
        f"processes, on cores {meta['system_cpus']}. {LOAD_MODES[meta.get('mode', 'counters')]} over "
        f"{meta['series']:,} series, {'untagged' if meta.get('untagged') else 'each line with two DogStatsD tags'}, "
        f"{meta['duration']} s of load per run from {meta.get('client_sockets', 1)} source sockets, "
        f"{meta['repeats']} runs per rate (the median decides), flush interval "
        f"{meta['flush_interval']} s everywhere, pystatsd with {meta['shards']} shards and its {meta['sink']} sink.",
        "- A run passes when delivered counters (the sum of every counter aggregate of the load's names) are "
        "within 0.1 % of what the generator sent. The search doubles (or halves) the rate from a start rate "
        f"until one rate passes and the next fails, then bisects {meta['bisections']} time(s): a highest rate is "
        f"known to within a factor {2 ** (1 / 2 ** meta['bisections']):.2f} (the next rate tried failed). All "
        "systems run at once and take turns run by run, so a drift in the machine's speed falls on all alike.",
        f"- The machine is shared: a run during which other processes took more than {DISTURBED_SHARE:.0%} of "
        f"the systems' cores (user time from /proc/stat, less the system's and the runner's own) was repeated, "
        f"{meta['runs_repeated']} times in all (at most {meta['retries']} times per run; a run still "
        "disturbed then is kept and shows in the last column of the last table).",
        "",
        "## Highest offered rate under 0.1 % loss",
        "",
    ]
    for per_datagram in sizes_of(results):
        lines += headline(results, per_datagram)
    lines += [f"![offered vs delivered, and CPU per million metrics]({plot_name})", "",
              "## Targets (issue 5)", "", *table(["target", "measured", "verdict"], target_rows(results)), "",
              "## pystatsd per stage at its highest passing rate", "", *per_stage(results), "",
              "## Scaling (pystatsd, 20 metrics per datagram)", "",
              *scaling(results, meta["nproc"], meta["system_cpus"]), "",
              "## Idle and memory", "",
              "CPU with no traffic (after start-up), then peak RSS (VmHWM) of each process once 1,000 series "
              "(a quarter each counters, gauges, timers, sets) went through.", "",
              *table(["system", "idle % of a core", "per process (%)", "peak RSS per process (MiB)"],
                     idle_rows(results.idle)), "",
              "## Every rate measured", "",
              "Medians; the loss columns are those of the median run. Kernel drops are datagrams the receiving "
              "socket's buffer had no room for (/proc/net/udp) times metrics per datagram. Own loss counters "
              "are the system's: pystatsd's `receiver.kernel_drops` (its own reading of the same kernel figure, "
              "in datagrams), `receiver.dropped` and `receiver.bad_lines` (samples), "
              "`aggregator.lost_batches` (batches between receiver and shard), `forwarder.dropped` (aggregates) "
              "and `forwarder.lost_flushes`; statsd_exporter's `udp_packet_drops_total` (datagrams its reader "
              "could not queue); Etsy's `bad_lines_seen`. Lost past the kernel is sent − delivered − kernel "
              "drops: what the system lost after the socket took it.", "",
              *every_point(results), "", END]
    return lines


def write(results: BenchResults, out: Path, plot_path: Path) -> None:
    """Writes the plot and the report, keeping whatever is outside the markers of an existing report."""
    plot(results, plot_path)
    block = "\n".join(generated(results, os.path.relpath(plot_path, out.parent)))
    old = out.read_text() if out.exists() else ""
    if BEGIN in old and END in old:
        text = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        text = f"# Benchmark results\n\n{block}\n\n## Profile\n\nNot written yet.\n"
    out.write_text(text)


def summary_table(results: BenchResults) -> str:
    lines = []
    for per_datagram in sizes_of(results):
        lines += headline(results, per_datagram)
    return "\n".join(lines + table(["target", "measured", "verdict"], target_rows(results)))


def plot(results: BenchResults, path: Path) -> None:
    import matplotlib  # the bench extra; only a full run needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sizes_of(results)
    figure, axes = plt.subplots(2, len(sizes), figsize=(6 * len(sizes), 9), squeeze=False)
    for column, per_datagram in enumerate(sizes):
        top, bottom = axes[0][column], axes[1][column]
        for system in systems_of(results):
            points = points_of(results.sweep, system, per_datagram)
            offered = [p.median(lambda r: r.offered_per_sec) for p in points]
            delivered = [p.median(lambda r: r.delivered_per_sec) for p in points]
            # a run that delivered nothing has no CPU per metric: leave a gap, not an infinity
            cpu = [p.median(lambda r: r.cpu_per_million()) if p.median(lambda r: r.delivered) else math.nan
                   for p in points]
            (line,) = top.plot(offered, delivered, "o-", label=system)
            bottom.plot(offered, cpu, "o-", color=line.get_color(), label=system)
            failed = [i for i, p in enumerate(points) if not p.passed]
            top.plot([offered[i] for i in failed], [delivered[i] for i in failed], "x", color="black", ms=9)
        ceiling = max((p.median(lambda r: r.offered_per_sec) for p in results.sweep
                       if p.per_datagram == per_datagram), default=1.0)
        top.plot([0, ceiling], [0, ceiling], ":", color="grey", label="delivered = offered")
        top.set(title=f"{per_datagram} metric(s) per datagram (x: median loss ≥ 0.1 %)",
                xlabel="offered metrics/s", ylabel="delivered metrics/s")
        bottom.set(title=f"CPU per million metrics, {per_datagram}/datagram",
                   xlabel="offered metrics/s", ylabel="CPU-seconds per million metrics")
        bottom.set_ylim(bottom=0)
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
            ax.ticklabel_format(axis="x", style="plain")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
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
