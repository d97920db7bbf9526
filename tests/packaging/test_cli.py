"""The `pystatsd` command: version, check-config (every problem, the config lookup order) and run."""

from __future__ import annotations

import configparser
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

import stages
import stages.common.config
from harness.paths import REPO, VENV_BIN
from harness.pipeline import Pipeline
from harness.wait import wait_for
from stages.control.cli import main
from stages.control.supervisord_conf import render_supervisord_conf

BAD_CONFIG = """\
flush_intervall: 10
bind_port: 99999
queues:
  shard_batches: many
percentiles: [50, 200]
forwarders:
  file:
    path: /tmp/x.jsonl
    format: xml
  kafak: {}
  kafka:
    kafka_topic: metrics
"""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"pystatsd {stages.__version__}\n"


def test_check_config_accepts_the_shipped_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(REPO / "etc" / "pystatsd.yaml")]) == 0
    assert capsys.readouterr().out.endswith("pystatsd.yaml: OK\n")


def test_check_config_prints_every_problem_with_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    assert main(["check-config", "-c", str(path)]) == 78
    problems = [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]
    keys = [problem.split(":", 1)[0] for problem in problems]
    assert keys == ["flush_intervall", "queues.shard_batches", "bind_port", "percentiles", "forwarders.file.format",
                    "forwarders.kafak", "forwarders.kafka.kafka_broker"], problems
    assert "did you mean 'flush_interval'" in problems[0]


def problems_of(config: str, path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """check-config's problems, one a line, for ``config`` written at ``path``; it must exit 78."""
    path.write_text(config)
    assert main(["check-config", "-c", str(path)]) == 78
    return [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]


def test_check_config_names_every_missing_key_of_a_section_at_once(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert problems_of("forwarders:\n  kafka:\n    format: json\n", tmp_path / "c.yaml", capsys) == [
        "forwarders.kafka.kafka_broker: required key is missing",
        "forwarders.kafka.kafka_topic: required key is missing",
    ]


def test_check_config_names_a_bad_value_once_not_again_as_missing(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Dropping the bad kafka_broker to look further must not report it as missing as well.
    assert problems_of("forwarders:\n  kafka:\n    kafka_broker: nohost\n    kafka_topic: t\n", tmp_path / "c.yaml",
                       capsys) == ["forwarders.kafka.kafka_broker: expected host:port[,host:port...], got 'nohost'"]


@pytest.mark.parametrize(("where", "why"), [
    ("{tmp}/missing/out.jsonl", "folder {tmp}/missing does not exist"),
    ("{tmp}/a-folder", "it is a folder"),
    ("{tmp}/a-file/out.jsonl", "Not a directory"),
    ("/proc/out.jsonl", "/proc holds the kernel's files, not aggregates"),
    ("/proc/version", "/proc holds the kernel's files, not aggregates"),
    ("/sys/out.jsonl", "/sys holds the kernel's files, not aggregates"),
])
def test_check_config_names_a_file_sink_path_that_cannot_be_opened(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   where: str, why: str) -> None:
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").touch()
    before = sorted(tmp_path.rglob("*"))
    target = where.format(tmp=tmp_path)
    config = f"forwarders:\n  file:\n    path: {target}\n"
    assert problems_of(config, tmp_path / "c.yaml", capsys) == [
        f"forwarders.file.path: cannot open {target}: {why.format(tmp=tmp_path)}"]
    assert sorted(tmp_path.rglob("*")) == [*before, tmp_path / "c.yaml"]  # nothing made by the check


def test_check_config_does_not_create_the_file_sink_s_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"forwarders:\n  file:\n    path: {tmp_path / 'out.jsonl'}\n  console: {{}}\n")
    assert main(["check-config", "-c", str(config)]) == 0
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read config file"),
    ("a: [", "not valid YAML"),
    ("- 1\n", "the top level must be a map"),
])
def test_check_config_of_an_unusable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None,
                                          expected: str) -> None:
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["check-config", "-c", str(path)]) == 78
    assert expected in capsys.readouterr().err


def test_config_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    explicit, from_env, system = (tmp_path / name for name in ("explicit.yaml", "env.yaml", "system.conf"))
    for path in (explicit, from_env, system):
        path.write_text("flush_interval: 5\n")

    def checked(*args: str) -> str:
        assert main(["check-config", *args]) == 0
        return capsys.readouterr().out.rsplit(": OK", 1)[0]

    monkeypatch.setattr(stages.common.config, "SYSTEM_CONFIG", system)
    monkeypatch.setenv("PYSTATSD_CONFIG", str(from_env))
    assert checked("-c", str(explicit)) == str(explicit)
    assert checked() == str(from_env)
    monkeypatch.delenv("PYSTATSD_CONFIG")
    assert checked() == str(system)
    monkeypatch.setattr(stages.common.config, "SYSTEM_CONFIG", tmp_path / "absent.conf")
    assert checked() == str(REPO / "etc" / "pystatsd.yaml")


def test_rendered_supervisord_conf() -> None:
    text = render_supervisord_conf((REPO / "supervisord.conf").read_text(), Path("/srv/home"),
                                   "/opt/x/bin/python", Path("/run/x"), {"shards": 3, "extra_receivers": None})
    assert "%(here)s" not in text and ".venv" not in text
    conf = configparser.RawConfigParser()
    conf.read_string(text)
    assert conf["supervisord"]["environment"] == 'PYSTATSD_SHARDS="3",PYSTATSD_EXTRA_RECEIVERS="0"'
    assert conf["supervisord"]["pidfile"] == "/run/x/supervisord.pid"
    assert conf["supervisorctl"]["serverurl"] == "unix:///run/x/supervisor.sock"
    programs = [section for section in conf.sections() if section.startswith("program:")]
    assert sorted(programs) == ["program:aggregator", "program:forwarder", "program:receiver",
                                "program:receiver-extra"]
    for section in programs:
        program = conf[section]
        assert program["command"].startswith("/opt/x/bin/python -m stages.")
        assert "--run-dir /run/x" in program["command"]
        assert program["directory"] == "/srv/home"
        for stream in ("stdout", "stderr"):
            if f"{stream}_logfile" in program:
                assert program[f"{stream}_logfile"] == f"/dev/{stream}"
                assert program[f"{stream}_logfile_maxbytes"] == "0"
    more = render_supervisord_conf((REPO / "supervisord.conf").read_text(), Path("/srv/home"),
                                   "/opt/x/bin/python", Path("/run/x"), {"shards": None, "extra_receivers": 2})
    assert 'PYSTATSD_SHARDS="2",PYSTATSD_EXTRA_RECEIVERS="2"' in more


def test_run_refuses_a_bad_config_before_starting_anything(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("flush_intervall: 10\n")
    result = subprocess.run([VENV_BIN / "pystatsd", "run", "-c", config, "--run-dir", tmp_path / "run"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78
    assert "flush_intervall: unknown key" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("output_to", ["file", "file-appended", "pipe"])
def test_run_from_the_repo(output_to: str) -> None:
    """`pystatsd run > file 2>&1` (and `>>`, and a pipe) gets every line of every stage."""
    pipeline = Pipeline(shards=3)
    output = pipeline.dir / "stdout.log"
    earlier = b"a line from before\n" if output_to == "file-appended" else b""
    output.write_bytes(earlier)
    piped: list[bytes] = []
    with output.open("ab" if earlier else "wb") as out:
        proc = subprocess.Popen([VENV_BIN / "pystatsd", "run", "-c", pipeline.config_path,
                                 "--run-dir", pipeline.run_dir, "--shards", "3"],
                                stdout=subprocess.PIPE if output_to == "pipe" else out, stderr=subprocess.STDOUT,
                                env=pipeline.env)
    reader = threading.Thread(target=lambda: piped.extend(proc.stdout or []), daemon=True)
    if output_to == "pipe":
        reader.start()
    try:
        wait_for(pipeline.all_running, 30, "the receiver, 3 shards and the forwarder to be RUNNING")
        pipeline.wait_interval_start()
        pipeline.send("cli.run:2|c|#via:cli", pipeline.statsd_port)
        (aggregate,) = pipeline.wait_series("cli.run", settle=False)
        assert (aggregate["value"], aggregate["tags"]) == (2.0, {"via": "cli"})
        # In the foreground supervisord applies no umask of its own: pystatsd run sets 077 for everything.
        assert pipeline.loose_modes() == {}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        if output_to == "pipe":
            reader.join(10)
        text = b"".join(piped).decode() if output_to == "pipe" else output.read_text()
        assert text.startswith(earlier.decode())
        for stage in ("receiver", "aggregator-0", "aggregator-1", "aggregator-2", "forwarder"):
            loaded = rf"^\S+ \S+ {stage} INFO stages.common.lifecycle: Loaded config "
            assert len(re.findall(loaded, text, re.MULTILINE)) == 1
            assert len(re.findall(rf"^\S+ \S+ {stage} INFO \S+: Stopped( after .*)?$", text, re.MULTILINE)) == 1
        for port in (pipeline.port, pipeline.statsd_port):
            listening = rf" receiver \S+ stages.receiver.listeners.datagram: Listening on udp://127.0.0.1:{port} "
            assert len(re.findall(listening, text)) == 1
        assert text.count("supervisord started with pid") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            reader.join(10)
            proc.stdout.close()
        pipeline.sock.close()
        pipeline.cleanup()
