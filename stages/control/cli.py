"""The ``pystatsd`` command: ``run`` (the whole pipeline under supervisord), ``check-config``, ``status``,
``send`` (metrics to a running instance, as written), ``rules test`` (what the rules make of lines),
``capture`` and ``replay`` (what the receivers read, to a file and back: stages.control.capture_cli), ``tap``
(the metrics passing a point of the running pipeline: stages.control.tap), ``top`` (its busiest names:
stages.control.top), ``version``.

``run`` checks the config, renders the repo's ``supervisord.conf`` (or the copy an installed package
ships) into the run directory with this interpreter and that run directory filled in, then becomes
supervisord in the foreground (stages.control.supervise: supervisord's own main loop in this process, which
exits 78 with every stage's reason once none is left running): that is what the systemd unit runs.
Every stage logs to the command's own stdout/stderr, so the journal (or the terminal) gets everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import re
import socket
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pystatsd.client import Client
from stages import __version__
from stages.common.addresses import live_unix_socket, loopback_if_any
from stages.common.config import Config, ConfigError, config_path, load_config, load_section
from stages.common.config_diff import config_changes
from stages.common.lifecycle import DEFAULT_RUN_DIR, EXIT_CONFIG, EXIT_OK, EXIT_SOFTWARE
from stages.common.process_names import AGGREGATOR, is_process_of
from stages.common.tap import RECEIVED, WHERE
from stages.control import capture_cli, operations, status, try_rules
from stages.control.address_check import address_problems, tcp_url
from stages.control.supervisord_conf import (
    INSTALLED_TEMPLATE,
    PROGRAMS_FILE,
    PROGRAMS_HEADER,
    REPO_TEMPLATE,
    render_supervisord_conf,
    supervisord_template,
)
from stages.control.tap import DEFAULT_RATE, new_spec, tap
from stages.control.top import parse_by, top
from stages.forwarder.sinks import load_sink_configs, sharing_problems, sink_kind, sink_sections
from stages.receiver.rules.kind import RulesError
from stages.receiver.rules.rule_set import rule_problems
from stages.rundir.config_copies import RUNNING, load_copy, source_of
from stages.rundir.figures import read_all
from stages.rundir.private_file import make_private_dir, write_private
from stages.rundir.ring import RING_FILE, read_ring
from stages.rundir.run_dir_check import make_run_dir, run_dir_problems

#: ``pystatsd status`` of an instance that is running but not healthy (or not running).
EXIT_UNHEALTHY = 1

#: The run directory of an installed pystatsd when systemd does not say ($RUNTIME_DIRECTORY).
INSTALLED_RUN_DIR = Path("/run/pystatsd")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pystatsd`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="pystatsd", description="A tagged statsd daemon.")
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = ("config file (default: $PYSTATSD_CONFIG, /etc/pystatsd/pystatsd.conf, "
                   "then the repo's etc/pystatsd.yaml)")
    run = commands.add_parser("run", help="run the whole pipeline under supervisord in the foreground")
    run.add_argument("-c", "--config", help=config_help)
    run.add_argument("--run-dir", help="directory for sockets and supervisord's files "
                     "(default: $RUNTIME_DIRECTORY, else run/ in the repo or /run/pystatsd when installed)")
    run.add_argument("--shards", type=int, help="aggregator shards (default: supervisord.conf's PYSTATSD_SHARDS)")
    run.add_argument("--extra-receivers", type=int,
                     help="receivers beside the first, sharing its UDP and TCP ports "
                          "(default: supervisord.conf's PYSTATSD_EXTRA_RECEIVERS)")
    check = commands.add_parser("check-config", help="validate a config and print every problem")
    check.add_argument("-c", "--config", help=config_help)
    check.add_argument("--diff", metavar="NEW", help="also check NEW and print what it changes against the config, "
                       "key by key, and whether a reload applies each change")
    status = commands.add_parser("status", help="each stage's state and figures, and whether all is healthy")
    status.add_argument("-c", "--config", help=config_help)
    status.add_argument("--run-dir", help="the running instance's run directory (default: as for run)")
    status.add_argument("--json", action="store_true", help="print JSON for machines instead of a table")
    send = commands.add_parser("send", help="send metrics as they are written, one datagram, to a running instance")
    send.add_argument("lines", nargs="*", metavar="line",
                      help="statsd lines (page.views:1|c|#page:home) or the original JSON; read from stdin if none")
    send.add_argument("-c", "--config", help=config_help)
    send.add_argument("--host", help="where to send (default: the config's bind_address, loopback if it binds all)")
    send.add_argument("--port", type=int, help="UDP port (default: the config's bind_port)")
    restart = commands.add_parser("restart", help="restart a stage of the running instance, losing nothing")
    restart.add_argument("target", help="receiver (in place, sockets kept open), aggregator (every shard, one "
                         "after the other), aggregator-K, or forwarder")
    restart.add_argument("-c", "--config", help=config_help)
    restart.add_argument("--run-dir", help="the running instance's run directory (default: as for run)")
    reshard = commands.add_parser("reshard", help="change the shard count of the running instance under traffic")
    reshard.add_argument("shards", type=int, help="the new number of shards")
    reshard.add_argument("-c", "--config", help=config_help)
    reshard.add_argument("--run-dir", help="the running instance's run directory (default: as for run)")
    reload = commands.add_parser("reload", help="re-read the config in every stage of the running instance, "
                                 "losing nothing")
    reload.add_argument("-c", "--config", help="the config the instance reads (default: the one it started with)")
    reload.add_argument("--run-dir", help="the running instance's run directory (default: as for run)")
    rules = commands.add_parser("rules", help="try the config's rules").add_subparsers(dest="rules_command",
                                                                                        required=True)
    rules_test = rules.add_parser("test", help="print what the rules make of each line and which rule decided")
    rules_test.add_argument("lines", nargs="*", metavar="line",
                            help="lines as a client sends them (api.h1.GET.latency:12|ms); read from stdin if none")
    rules_test.add_argument("-c", "--config", help=config_help)
    rules_test.add_argument("--json", action="store_true", help="one JSON object per metric instead of text")
    capture_cli.add_parsers(commands, config_help)
    tap_cmd = commands.add_parser("tap", help="print the metrics passing a point of the running pipeline, sampled, "
                              "one JSON object a line")
    tap_cmd.add_argument("--where", choices=WHERE, default=RECEIVED,
                     help="received: parsed by the receiver (default); mapped: after the rules, with the rule "
                          "that decided; flushed: the aggregates the forwarder hands the sinks")
    tap_cmd.add_argument("--match", metavar="GLOB", help="only names this shell glob matches (api.*.latency)")
    tap_cmd.add_argument("--tag", metavar="K:V", action="append", default=[], help="only metrics with this tag "
                     "(repeat: all of them)")
    tap_cmd.add_argument("--count", type=int, metavar="N", help="stop after N metrics (default: until interrupted)")
    tap_cmd.add_argument("--rate", metavar="N/s", help=f"at most N metrics a second from each stage process "
                     f"(default: {DEFAULT_RATE:g}/s)")
    tap_cmd.add_argument("-c", "--config", help=config_help)
    tap_cmd.add_argument("--run-dir", help="the running instance's run directory (default: as for run)")
    top_cmd = commands.add_parser("top", help="the busiest names, series or tag values of the running pipeline, "
                                  "refreshed")
    top_cmd.add_argument("--by", default="name", metavar="name|series|tag:K",
                         help="name: names by metrics a second (default); series: names by series, nearest their "
                              "series_limit_per_name first; tag:K: the values of tag K by metrics a second")
    top_cmd.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between refreshes "
                         "(default 2; the shards' figures change once per flush_interval)")
    top_cmd.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit, for scripts")
    top_cmd.add_argument("-c", "--config", help=config_help)
    top_cmd.add_argument("--run-dir", help="the running instance's run directory (default: as for run)")
    commands.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"pystatsd {__version__}")
        return EXIT_OK
    try:
        return command(args, config_path(args.config).absolute())
    except Refused as exc:
        print(exc, file=sys.stderr)
        return exc.code


def command(args: argparse.Namespace, path: Path) -> int:
    """The subcommand ``args`` names, with the config at ``path``; its exit status."""
    if args.command == "check-config":
        return check_config(path) if args.diff is None else diff_configs(path, Path(args.diff).absolute())
    if args.command == "status":
        return show_status(path, args.run_dir, args.json)
    if args.command == "restart":
        return restart_stage(path, args.run_dir, args.target)
    if args.command == "reshard":
        return reshard_instance(path, args.run_dir, args.shards)
    if args.command == "reload":
        return reload_instance(path, args.config is not None, args.run_dir)
    if args.command == "send":
        return send_lines(path, args.lines or sys.stdin.read().splitlines(), args.host, args.port)
    if args.command == "capture":
        return capture_cli.capture_command(args, instance(path, args.run_dir)[1])
    if args.command == "replay":
        return capture_cli.replay_command(args)
    if args.command == "rules":
        return test_rules(path, args.lines or sys.stdin.read().splitlines(), args.json)
    if args.command == "tap":
        return tap_instance(path, args)
    if args.command == "top":
        return top_instance(path, args)
    return run_pipeline(path, args.run_dir, {"shards": args.shards, "extra_receivers": args.extra_receivers})


NOT_RELOADED = "nothing was reloaded: the running config is kept"


class Refused(Exception):
    """A command cannot go on: the message goes to stderr and ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.code = code


class RunDirRefused(Refused):
    """The run directory may not be used (stages.rundir.run_dir_check)."""


def instance(path: Path, run_dir_arg: str | None) -> tuple[Config, Path]:
    """The config at ``path`` and the run directory of the instance it runs (``--run-dir``, the
    config's, else the default)."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise Refused(f"{path}: {exc}") from None
    return config, usable(chosen_run_dir(run_dir_arg, config, supervisord_template()))


def chosen_run_dir(run_dir_arg: str | None, config: Config, template: Path) -> Path:
    """The config's ``run_dir`` (every stage takes it over its ``--run-dir``), else ``--run-dir``, else the
    default; Refused when ``--run-dir`` names another: the command and its stages would part ways."""
    if run_dir_arg and config.run_dir and Path(run_dir_arg).absolute() != Path(config.run_dir).absolute():
        raise Refused(f"--run-dir {run_dir_arg} and the config's run_dir ({config.run_dir}) differ: the stages "
                      "would use run_dir; give one of them")
    return Path(config.run_dir or run_dir_arg or default_run_dir(template)).absolute()


def usable(run_dir: Path) -> Path:
    """``run_dir``, unless stages.rundir.run_dir_check refuses it (Refused, every problem): a command on a running
    instance reads and writes there as pystatsd run does."""
    problems = run_dir_problems(run_dir)
    if problems:
        raise RunDirRefused("\n".join([f"pystatsd cannot use the run directory {run_dir}:", *problems]))
    return run_dir


def restart_stage(path: Path, run_dir_arg: str | None, target: str) -> int:
    """Restart ``target`` in the running instance; EXIT_OK when done, EXIT_UNHEALTHY when not."""
    _, run_dir = instance(path, run_dir_arg)
    # A restarted stage reads the config the instance reads: one with a problem would not start.
    source = source_of(run_dir) or path
    if check_config(source) != EXIT_OK:
        raise Refused(f"nothing was restarted: {source} has a problem")
    try:
        done = operations.restart(run_dir, target)
    except operations.OperationError as exc:
        raise Refused(f"restart {target}: {exc}", EXIT_UNHEALTHY) from None
    print("\n".join(done))
    return EXIT_OK


def reshard_instance(path: Path, run_dir_arg: str | None, shards: int) -> int:
    """Change the running instance's shard count to ``shards``; EXIT_OK when done."""
    if shards < 1:
        raise Refused(f"the shard count must be at least 1, got {shards}")
    config, run_dir = instance(path, run_dir_arg)
    try:
        lines = operations.reshard(run_dir, shards, config.flush_interval)
    except operations.OperationError as exc:
        raise Refused(f"reshard: {exc}", EXIT_UNHEALTHY) from None
    print("\n".join(lines))
    return EXIT_OK


def reload_instance(path: Path, explicit: bool, run_dir_arg: str | None) -> int:
    """Check the config the running instance reads, then have every stage re-read it."""
    try:
        _, run_dir = instance(path, run_dir_arg)
    except RunDirRefused:
        raise
    except Refused:
        if run_dir_arg is None:  # the run directory may be in the config: it must be valid to find it
            check_config(path)
            raise Refused(NOT_RELOADED) from None
        run_dir = usable(Path(run_dir_arg).absolute())
    source = source_of(run_dir)
    if source is not None and source != path:
        if explicit:
            raise Refused(f"the instance in {run_dir} reads {source}, not {path}: edit that file, then run "
                          "pystatsd reload without -c")
        path = source
    if check_config(path) != EXIT_OK:
        raise Refused(NOT_RELOADED)
    try:
        lines = operations.reload(run_dir, load_config(path))
    except operations.OperationError as exc:
        raise Refused(f"reload: {exc}", EXIT_UNHEALTHY) from None
    print("\n".join(lines))
    return EXIT_OK


def show_status(path: Path, run_dir_arg: str | None, as_json: bool) -> int:
    """Print the running instance's status; EXIT_OK when healthy, EXIT_UNHEALTHY when not."""
    try:
        config, run_dir = instance(path, run_dir_arg)
    except RunDirRefused:
        raise
    except Refused as exc:
        # A config edited since the start is no reason not to show what runs: its copy of the config says
        # the interval the figures are judged by.
        print(f"{exc} (showing the instance with the config it runs)", file=sys.stderr)
        run_dir = usable(Path(run_dir_arg or default_run_dir(supervisord_template())).absolute())
        config = load_copy(run_dir, RUNNING) or Config()
    processes = status.supervisor_processes(run_dir)
    shards = sum(1 for name in processes if is_process_of(name, AGGREGATOR)) or sum(
        1 for name in read_all(run_dir) if is_process_of(name, AGGREGATOR))
    report = status.collect(run_dir, shards, config.flush_interval)
    print(json.dumps(report, indent=2, sort_keys=True) if as_json else status.render(report))
    return EXIT_OK if report["healthy"] else EXIT_UNHEALTHY


def tap_instance(path: Path, args: argparse.Namespace) -> int:
    """``pystatsd tap``: the metrics passing ``--where`` in the running instance."""
    if args.count is not None and args.count < 1:
        raise Refused(f"--count: at least 1, got {args.count}")
    try:
        spec = new_spec(args.where, args.match, args.tag, args.rate)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    return tap(running_run_dir(path, args.run_dir), spec, args.count)


def top_instance(path: Path, args: argparse.Namespace) -> int:
    """``pystatsd top``: the busiest names of the running instance."""
    if not args.interval > 0:
        raise Refused(f"--interval: a positive number of seconds, got {args.interval}")
    try:
        by, tag_key = parse_by(args.by)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    return top(running_run_dir(path, args.run_dir), by, tag_key, args.interval, args.json)


def running_run_dir(path: Path, run_dir_arg: str | None) -> Path:
    """The run directory of the instance a watching command (tap, top) looks at: as status finds it, a
    config edited since the start being no reason not to look at what runs."""
    try:
        return instance(path, run_dir_arg)[1]
    except RunDirRefused:
        raise
    except Refused as exc:
        print(f"{exc} (looking at the instance in the run directory given or the default one)", file=sys.stderr)
        return usable(Path(run_dir_arg or default_run_dir(supervisord_template())).absolute())


def send_lines(path: Path, lines: list[str], host: str | None, port: int | None) -> int:
    """Send ``lines`` with the client library's sender to the instance the config at ``path`` describes."""
    if host is None or port is None:
        try:
            config = load_config(path)
        except ConfigError as exc:
            print(f"{path}: {exc} (or give --host and --port)", file=sys.stderr)
            return EXIT_CONFIG
        host = host or loopback_if_any(config.bind_address)
        port = port or config.bind_port
    lines = [line for line in lines if line.strip()]
    if not lines:
        print("nothing to send: give lines as arguments or on stdin", file=sys.stderr)
        return EXIT_CONFIG
    try:
        client = Client(host, port)
    except ValueError as exc:
        print(f"--{exc}", file=sys.stderr)
        return EXIT_CONFIG
    # A failure is the client's own warning, on stderr through logging's last-resort handler.
    sent = client.send_raw(lines)
    client.close()
    if not sent:
        return EXIT_UNHEALTHY
    print(f"sent {len(lines)} line{'s' if len(lines) > 1 else ''} to {host}:{port} (udp)")
    return EXIT_OK


def test_rules(path: Path, lines: list[str], as_json: bool) -> int:
    """Print what the rules of the config at ``path`` make of each of ``lines``; EXIT_CONFIG when they cannot load."""
    try:
        config = load_config(path)
        results = list(try_rules.tried(config, path.parent, [line for line in lines if line.strip()]))
    except (ConfigError, RulesError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print("\n".join((try_rules.as_json if as_json else try_rules.as_text)(results)))
    return EXIT_OK


def check_config(path: Path) -> int:
    """Print every problem of the config at ``path``; EXIT_OK when there is none, else EXIT_CONFIG."""
    problems = config_problems(path)
    if not problems:
        print(f"{path}: OK")
        return EXIT_OK
    print(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_CONFIG


def diff_configs(path: Path, new_path: Path) -> int:
    """Check both configs, then print what ``new_path`` changes against ``path``; EXIT_CONFIG if either is bad."""
    for checked in (path, new_path):
        if check_config(checked) != EXIT_OK:
            return EXIT_CONFIG
    changes = config_changes(load_config(path), load_config(new_path), sink_sections)
    if not changes:
        print(f"{new_path}: no change against {path}")
        return EXIT_OK
    print(f"{new_path} against {path}: {len(changes)} change{'s' if len(changes) > 1 else ''}")
    width = max(len(change.key) for change in changes)
    for change in changes:
        print(f"  {change.key:<{width}}  {change.old} -> {change.new}  (applies {change.applies})")
    return EXIT_OK


def config_problems(path: Path) -> list[str]:
    """Every problem in the config at ``path``, each naming its dotted key; empty when it is valid."""
    try:
        config: Config | None = load_config(path)
        problems: list[str] = []
    except ConfigError as exc:
        problems = list(exc.problems)
        raw = _raw_mapping(path)
        if raw is None:
            return problems
        # load_config stops at the first problem: dropping each bad key in turn finds the others.
        more, config = _peel(lambda section: load_section(Config, section, ""), raw, "")
        problems += [problem for problem in more if problem not in problems]
    if config is None:
        return problems
    problems += rule_problems(config, path.parent)
    sinks = {}
    for sink, raw_sink in config.forwarders.items():
        try:
            sink_kind(sink, raw_sink)  # its name and type first: a problem there leaves no keys to check
        except ConfigError as exc:
            problems += exc.problems
            continue
        check_sink = _sink_checker(config, sink)
        sink_problems, loaded = _peel(check_sink, raw_sink, f"forwarders.{sink}")
        problems += sink_problems
        if loaded is not None:
            sinks[sink] = loaded[sink]
            problems += [f"forwarders.{sink}.{problem}" for problem in loaded[sink].problems_here()]
    return problems + sharing_problems(sinks)


def _raw_mapping(path: Path) -> dict[str, Any] | None:
    """The config file as a map, or None when it cannot be read or parsed (load_config said why)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return raw if isinstance(raw, dict) else None


def _sink_checker(config: Config, sink: str) -> Callable[[Any], object]:
    return lambda raw: load_sink_configs(dataclasses.replace(config, forwarders={sink: raw}))


def _peel(load: Callable[[Any], Any], raw: Any, prefix: str) -> tuple[list[str], Any]:
    """Load ``raw``, dropping the keys the errors name, until it loads; (problems, result or None)."""
    problems: list[str] = []
    dropped: set[str] = set()
    while True:
        try:
            return problems, load(raw)
        except ConfigError as exc:
            named = [(problem, _top_key(problem, prefix)) for problem in exc.problems]
            # A required key dropped here is missing now: not the user's problem, only where peeling ends.
            problems += [problem for problem, key in named if key not in dropped and problem not in problems]
            keys = {key for _, key in named if key is not None and isinstance(raw, Mapping) and key in raw}
            if not keys:
                # Not about a key of this section there is (missing required keys, a whole section's type).
                return problems, None
            dropped |= keys
            raw = {k: v for k, v in raw.items() if k not in keys}


def _top_key(message: str, prefix: str) -> str | None:
    """The key right under ``prefix`` that an error message starts with (``queues.x: ...`` → ``queues``)."""
    dotted = message.split(":", 1)[0]
    if prefix:
        if not dotted.startswith(prefix + "."):
            return None
        dotted = dotted[len(prefix) + 1:]
    return re.split(r"[.\[]", dotted, maxsplit=1)[0]


def default_run_dir(template: Path) -> Path:
    """``$RUNTIME_DIRECTORY`` (set by systemd), else run/ in a checkout or /run/pystatsd when installed."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        # systemd may list several directories separated by colons; the unit asks for one.
        return Path(runtime.split(":")[0])
    return DEFAULT_RUN_DIR if template == REPO_TEMPLATE else INSTALLED_RUN_DIR


def run_pipeline(path: Path, run_dir_arg: str | None, counts: dict[str, int | None]) -> int:
    """Check the config and the run directory, write the supervisord config there, become supervisord -n."""
    for key, least in (("shards", 1), ("extra_receivers", 0)):
        count = counts.get(key)
        if count is not None and count < least:
            print(f"--{key.replace('_', '-')} must be at least {least}, got {count}", file=sys.stderr)
            return EXIT_CONFIG
    if check_config(path) != EXIT_OK:
        return EXIT_CONFIG
    template = supervisord_template()
    if not template.exists():
        # A plain `pip install` has neither: run from a checkout (make install) or a package.
        print(f"No supervisord.conf template: neither {REPO_TEMPLATE} nor {INSTALLED_TEMPLATE} exists",
              file=sys.stderr)
        return EXIT_SOFTWARE
    config = load_config(path)
    try:
        run_dir = chosen_run_dir(run_dir_arg, config, template)
    except Refused as exc:
        print(f"pystatsd cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # supervisord applies its umask=077 only when it daemonizes: in the foreground (systemd, a
    # terminal) every stage would inherit the caller's, and write sockets, logs and aggregates 0644.
    os.umask(0o077)
    # The run directory (and what is missing on the way) made private, unless it is refused: before
    # supervisord opens its log, pid file and socket there as root.
    problems = start_problems(config, run_dir) or make_run_dir(run_dir)
    if problems:
        print(f"pystatsd cannot start: {len(problems)} problem{'s' if len(problems) > 1 else ''}", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        make_private_dir(run_dir / "log")
    except OSError as exc:
        print(f"pystatsd cannot start: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    ring = read_ring(run_dir)
    if counts.get("shards") is not None:
        # The count given is the ring now: every stage must take it, not a past reshard's.
        (run_dir / RING_FILE).unlink(missing_ok=True)
    elif ring is not None:
        counts = {**counts, "shards": ring.shards}  # what the last pystatsd reshard left
    conf = run_dir / "supervisord.conf"
    fleet = config.fleet_input is not None
    text = render_supervisord_conf(template.read_text(encoding="utf-8"), template.parent, sys.executable,
                                   run_dir, counts, receivers=not fleet)
    write_private(conf, text.encode("utf-8"))
    # Its counts are the ring's: what a past reshard added to them is in them now.
    write_private(run_dir / PROGRAMS_FILE, PROGRAMS_HEADER.encode("utf-8"))
    os.environ["PYSTATSD_CONFIG"] = str(path)
    sys.stdout.flush()
    sys.stderr.flush()
    _make_stdout_openable()
    _append_to_output_files()
    # supervisord -n -c conf in this very process, exiting 78 once no stage is left running (stages.control.supervise).
    os.execv(sys.executable, [sys.executable, "-m", "stages.control.supervise", str(run_dir)])


def start_problems(config: Config, run_dir: Path) -> list[str]:
    """What would keep the pipeline of ``config`` in ``run_dir`` from starting, found before anything starts:
    an instance already there, a run directory a stage would refuse, an address another program holds."""
    # First: nothing is opened through a run directory that may not be used (not even its socket).
    problems = run_dir_problems(run_dir)
    if not problems and live_unix_socket(str(run_dir / "supervisor.sock"), socket.SOCK_STREAM):
        return [f"{run_dir}: an instance of pystatsd already runs there (pystatsd status --run-dir {run_dir}); "
                "stop it, or give another --run-dir"]
    urls = [] if config.fleet_input is not None else config.listener_urls()
    served = [sink.serves_on() for sink in load_sink_configs(config).values()]
    served.append(config.health_address or None)
    urls += [tcp_url(address) for address in served if address]
    return problems + address_problems(urls)


def _append_to_output_files() -> None:
    """Make a stdout or stderr that is a regular file (``pystatsd run > file``) append-only.

    Every stage's log reaches it through supervisord opening /dev/stdout anew, in append mode, while
    supervisord writes its own lines at the offset the shell's ``>`` left it: each would overwrite
    the other's lines. With O_APPEND on the shell's descriptor too, every line lands after the last.
    """
    for fd in (1, 2):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)


def _make_stdout_openable() -> None:
    """Put a pipe (drained by ``cat`` to the real stdout) in front of a socket stdout.

    Under systemd stdout is the journal's socket, and a socket cannot be opened through /dev/stdout
    (ENXIO): supervisord would fail to start every program whose log goes there. A pipe can be.
    """
    if not stat.S_ISSOCK(os.fstat(1).st_mode):
        return
    read_end, write_end = os.pipe()  # both close-on-exec: cat gets only the read end, as its stdin
    # cat ends at EOF, once supervisord and every stage (which inherit the write end) have exited.
    os.posix_spawnp("cat", ["cat"], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0)])
    os.close(read_end)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)


if __name__ == "__main__":
    raise SystemExit(main())
