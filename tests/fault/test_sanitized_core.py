"""The compiled window and bucket built with AddressSanitizer and UndefinedBehaviorSanitizer, fed the parser
corpus, every hand-picked line and a bounded stream of random and mutated input: no error is reported.

The sanitized modules are built here (gcc), loaded under their real names in a child Python with the
ASan runtime preloaded, and driven through the same calls the receiver and the shards make.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.fault

REPO = Path(__file__).resolve().parent.parent.parent
SOURCES = {"stages.receiver._window": REPO / "stages/receiver/window.c",
           "stages.aggregator._bucket": REPO / "stages/aggregator/bucket.c"}
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]

DRIVER = textwrap.dedent('''
    import importlib.machinery, importlib.util, random, sys
    from pathlib import Path

    def load(name, path):
        loader = importlib.machinery.ExtensionFileLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        return module

    Window = load("stages.receiver._window", sys.argv[1]).Window
    Bucket = load("stages.aggregator._bucket", sys.argv[2]).Bucket
    from stages.aggregator.series import SeriesLimit
    from stages.receiver.parsers import payload_parser, statsd_lines
    from stages.receiver.identity import DROP, Decided
    from stages.receiver.parsers.base import LineOptions, OpenInterval
    from stages.receiver.window import take_payloads
    from tests.unit.lines import BYTES, HOSTILE, HOSTILE_BYTES, LINES, OTHER

    corpus = [p.read_bytes() for p in sorted(Path(sys.argv[3]).glob("*/*")) if p.suffix in (".txt", ".bin")]
    known = [line.encode("utf-8", "surrogatepass") for line in LINES + OTHER + HOSTILE] + BYTES + HOSTILE_BYTES
    rng = random.Random(11)

    def mutated():
        data = bytearray(b"\\n".join(rng.choices(known, k=rng.randint(1, 8))))
        for _ in range(rng.randint(0, 4)):
            at = rng.randrange(len(data) + 1)
            if rng.random() < 0.5 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            else:
                data[at:at] = bytes(rng.choice(b":|@#,=\\n{}[]0123456789.-+e ") for _ in range(3))
        return bytes(data)

    payloads = corpus + known + [mutated() for _ in range(20000)] + [rng.randbytes(rng.randint(0, 400))
                                                                     for _ in range(5000)]
    defaults = {"host": "h1"}
    window = Window(3, ("host", "h1"), statsd_lines(defaults))
    parse = payload_parser(defaults)
    buckets = [Bucket(SeriesLimit(limit, ("pystatsd_overflow", "true")).admit) for limit in (1, 10_000)]
    bad, bodies = {}, 0
    for start in range(0, len(payloads), 64):
        take_payloads(window, payloads[start:start + 64], parse, bad)
        for shard in window.take(rng.randint(1, 50)):
            for body, *_, entry_metrics in shard:
                for bucket in buckets:
                    bucket.merge(body, entry_metrics)
                bodies += 1
    for bucket in buckets:
        for cut in (bytes(body[:len(body) // 2]), body + b"\\x00", b"\\x95"):
            try:
                bucket.merge(cut)
            except ValueError:
                pass
        for counts in (entry_metrics[:-4], entry_metrics + b"\\x01\\x00\\x00\\x00", entry_metrics[:-1], b"\\x01"):
            try:
                bucket.merge(body, counts)
            except ValueError:
                pass
        assert sum(bucket.series_metrics().values()) > 0
        contents = bucket.contents()
        assert contents[0], "no counters held"
    # The seam for rules: every answer (kept, renamed, re-tagged, dropped) with a cache small enough to
    # be emptied again and again.
    # Every other answer names a tally, a new one now and then (the window's tally counts grow), and
    # some of those a scale, some a ttl (kept on gauge entries, handed with their batches).
    def rules(name, mtype, tags):
        decision = decide(name, mtype, tags)
        tally = len(name) % 41
        return (Decided(tally, decision, (None, 0.001, -3.0)[tally % 3], (None, 30.0)[tally % 5 % 2])
                if tally % 2 else decision)

    def decide(name, mtype, tags):
        pick = len(name) % 4
        if pick == 0:
            return DROP
        if pick == 1:
            return "renamed." + name[:2], tags + ("rule", "x")
        return (name, ()) if pick == 2 else None

    # With rules, container ids kept as tags, stamps checked and records taken.
    options = LineOptions(OpenInterval(10.0, 1700000005.0), True, [])
    ruled = Window(3, ("host", "h1"), statsd_lines(defaults, options), rules, 7, True)
    ttls = 0
    parse = payload_parser(defaults, options)
    for start in range(0, len(payloads), 64):
        take_payloads(ruled, payloads[start:start + 64], parse, bad)
        options.records.clear()
        for shard in ruled.take(rng.randint(1, 50)):
            bodies += len(shard)
            ttls += sum(len(batch[3]) for batch in shard)
    assert ttls > 0, "no gauge given a ttl"
    assert ruled.rule_dropped > 0, "no metric dropped by a rule"
    assert len(ruled.tallies) > 20 and sum(ruled.tallies) > 0, "no metric counted under a tally"
    print("ok", bodies, sum(bad.values()))
''')


def build(name: str, source: Path, out_dir: Path) -> Path:
    target = out_dir / (name.rsplit(".", 1)[1] + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-g", *SANITIZERS, "-I", sysconfig.get_paths()["include"],
                    "-I", str(REPO / "stages" / "common"), str(source), "-o", str(target)],
                   check=True, capture_output=True)
    return target


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler")
def test_the_compiled_parts_pass_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(libasan):
        pytest.skip("gcc has no AddressSanitizer runtime here")
    built = [build(name, source, tmp_path) for name, source in SOURCES.items()]
    env = dict(os.environ, LD_PRELOAD=libasan, PYTHONPATH=str(REPO),
               # CPython's own allocations live until exit: leaks are not what this looks for.
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
    result = subprocess.run([sys.executable, "-c", DRIVER, *map(str, built), str(REPO / "tests/data/datagrams")],
                            env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "runtime error" not in result.stderr and "AddressSanitizer" not in result.stderr, result.stderr[-4000:]
    assert result.stdout.startswith("ok "), result.stdout
