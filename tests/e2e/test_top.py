"""``pystatsd top`` against a real pipeline: in a real terminal (tmux) its screen shows the busiest name
first; ``--json`` gives each name's metrics a second and series exactly (the lines received, of every
type), and a tag's values with ``--by tag:K``; against a pipeline that is not running it says so and
exits 1."""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from harness.paths import VENV_BIN
from harness.pipeline import Pipeline, commands_without_a_pipeline
from harness.wait import wait_for

pytestmark = pytest.mark.e2e

#: name → (metrics per burst, series): busy.name the busiest by metrics, wide.name by series
TRAFFIC = {"busy.name": (30, 3), "wide.name": (12, 12), "calm.name": (2, 1)}


#: One interval's lines of types whose aggregates do not count their lines: a counter of 5s (its total 100), a
#: gauge set and changed 12 times (one value), 9 lines of a set of 3 members, a timer sampled at 0.5 (its
#: count 8). Each line is one metric, as ``pystatsd status`` counts them.
EVERY_TYPE = (["big.counter:5|c"] * 20 + ["level.gauge:7|g", "level.gauge:+1|g"] * 6
              + [f"who.set:u{i % 3}|s" for i in range(9)] + ["slow.timer:3|ms|@0.5"] * 4)


def burst(pipeline: Pipeline) -> None:
    """One round of TRAFFIC, counters of 1 spread evenly over each name's series, series id:N in region eu
    for an odd N, else us."""
    send_lines(pipeline, [f"{name}:1|c|#id:{i % series},region:{'eu' if i % series % 2 else 'us'}"
                          for name, (metrics, series) in TRAFFIC.items() for i in range(metrics)])


def send_lines(pipeline: Pipeline, lines: list[str]) -> None:
    for start in range(0, len(lines), 20):
        pipeline.send("\n".join(lines[start:start + 20]), pipeline.statsd_port)


def top_json(pipeline: Pipeline, *args: str) -> dict[str, Any]:
    done = pipeline.pystatsd("top", "--json", *args)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@contextmanager
def traffic_every_interval(pipeline: Pipeline, seconds: float = 30,
                           one_burst: Callable[[Pipeline], None] = burst) -> Iterator[None]:
    """``one_burst`` at the start of each interval, in a thread, for at most ``seconds``: then whichever
    interval a shard flushed last holds one burst exactly."""
    done = threading.Event()

    def send() -> None:
        deadline = time.monotonic() + seconds
        while not done.is_set() and time.monotonic() < deadline:
            pipeline.wait_interval_start()
            one_burst(pipeline)
            done.wait(pipeline.flush_interval / 2)  # out of this interval's first half before the next burst

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def shown_if(view: dict[str, Any], wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return view if wanted(view) else None


def names_seen(view: dict[str, Any]) -> list[tuple[str, float, int, int]]:
    return [(r["name"], r["metrics_per_s"], r["series"], r["folded"]) for r in view["rows"]]


def test_the_screen_in_a_terminal_shows_the_busiest_name_first() -> None:
    with Pipeline(flush_interval=1.0) as pipeline, traffic_every_interval(pipeline):
        session = f"pystatsd-top-{pipeline.port}"
        command = " ".join(shlex.quote(part) for part in [
            "env", f"PYSTATSD_CONFIG={pipeline.config_path}", str(VENV_BIN / "pystatsd"), "top", "--interval", "0.3",
            "-c", str(pipeline.config_path), "--run-dir", str(pipeline.run_dir)])
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "30", command], check=True)
        try:
            def rows() -> list[str]:
                screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                        text=True, check=True).stdout.splitlines()
                heading = next((i for i, line in enumerate(screen) if line.startswith("NAME")), len(screen))
                return [line.split()[0] for line in screen[heading + 1:] if line.strip()]

            wait_for(lambda: len(rows()) == 3, 20, "the screen to show the three names")
            assert rows() == ["busy.name", "wide.name", "calm.name"]
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_json_gives_each_names_rate_and_series_exactly_and_by_series_the_widest_first() -> None:
    expected = [("busy.name", 30.0, 3, 0), ("wide.name", 12.0, 12, 0), ("calm.name", 2.0, 1, 0)]
    with Pipeline(flush_interval=1.0) as pipeline, traffic_every_interval(pipeline):
        # Each interval's figures replace the last's: once they are of an interval of traffic, they are exact.
        view = wait_for(lambda: shown_if(top_json(pipeline), lambda v: names_seen(v) == expected), 20,
                        f"top to show {expected}")
        assert view["shards"] == 2
        by_series = wait_for(lambda: shown_if(top_json(pipeline, "--by", "series"), lambda v: len(v["rows"]) == 3),
                             20, "top --by series to show the three names")
        assert [r["name"] for r in by_series["rows"]] == ["wide.name", "busy.name", "calm.name"]


def test_by_tag_gives_the_tags_values() -> None:
    # us: busy's ids 0 and 2 (20 metrics), wide's 6 even ids (6), calm (2); eu: busy's id 1 (10), wide's odd ids (6)
    expected = [("us", 28.0, 9), ("eu", 16.0, 7)]
    with Pipeline(flush_interval=1.0) as pipeline, traffic_every_interval(pipeline):
        def values() -> list[tuple[str, float, int]]:
            return [(r["value"], r["metrics_per_s"], r["series"])
                    for r in top_json(pipeline, "--by", "tag:region")["rows"]]

        wait_for(lambda: values() == expected, 20, f"top --by tag:region to show {expected}")


def test_metrics_per_second_are_the_lines_received_of_every_type() -> None:
    # 20 counter lines of 5, 12 gauge lines, 9 set lines of 3 members, 4 timer lines at rate 0.5, in one 1 s
    # interval: not the counter's total, the gauge's one value, the set's members or the timer's rated count.
    expected = [("big.counter", 20.0, 1, 0), ("level.gauge", 12.0, 1, 0), ("who.set", 9.0, 1, 0),
                ("slow.timer", 4.0, 1, 0)]
    with Pipeline(flush_interval=1.0) as pipeline, traffic_every_interval(
            pipeline, one_burst=lambda p: send_lines(p, EVERY_TYPE)):
        wait_for(lambda: shown_if(top_json(pipeline), lambda v: names_seen(v) == expected), 20,
                 f"top to show {expected}")


def test_top_of_a_pipeline_that_is_not_running_says_so_and_exits_1_and_a_bad_by_is_refused() -> None:
    done, bad = commands_without_a_pipeline(("top", "--json"), ("top", "--by", "colour"))
    assert done.returncode == 1
    assert "no aggregator is running" in done.stderr
    assert bad.returncode == 78
    assert "--by: 'colour' is not name, series or tag:K" in bad.stderr
