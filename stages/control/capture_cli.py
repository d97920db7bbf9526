"""The ``capture`` and ``replay`` subcommands of ``pystatsd``: their arguments and what they print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.common.lifecycle import EXIT_OK
from stages.control import capture, replay

#: Exit status of a capture that could not be made or a replay refused or stopped at damage.
EXIT_FAILED = 1


def positive(kind: type[float] | type[int]) -> argparse._ActionType:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        return value
    return parse


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser], config_help: str) -> None:
    record = commands.add_parser("capture", help="record what the running receivers read, before parsing, "
                                 "into a new file (replay sends it again)")
    record.add_argument("--duration", type=positive(float), required=True, metavar="SECONDS",
                        help="how long to capture")
    record.add_argument("file", help="the capture file to create (0600; an existing file is refused)")
    record.add_argument("--listener", metavar="URL", help="capture this listener only (default: every one)")
    record.add_argument("--max-bytes", type=positive(int), default=capture.DEFAULT_MAX_BYTES,
                        help=f"stop before the file grows past this (default: {capture.DEFAULT_MAX_BYTES})")
    record.add_argument("-c", "--config", help=config_help)
    record.add_argument("--run-dir", help="the running instance's run directory (default: as for run)")
    again = commands.add_parser("replay", help="send a capture file's payloads again")
    again.set_defaults(config=None)  # a replay reads no config: the file says where it was recorded
    again.add_argument("file", help="a file pystatsd capture wrote")
    again.add_argument("--to", metavar="URL", action="append", default=[],
                       help="send the datagrams (a udp:// or unixgram:// URL) or the stream chunks (tcp://, "
                       "unix://) there; once per kind (default: each to the listener it was read on)")
    pace = again.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=positive(float), default=1.0, metavar="X",
                      help="X times the recorded pace (default: 1)")
    pace.add_argument("--max", action="store_true", help="as fast as the sockets take it")
    again.add_argument("--loops", type=positive(int), default=1, metavar="N", help="send the capture N times")
    again.add_argument("--force", action="store_true", help="allow a destination that is not loopback or a "
                       "Unix socket")


def capture_command(args: argparse.Namespace, run_dir: Path) -> int:
    path = Path(args.file).absolute()
    try:
        result = capture.capture(run_dir, path, args.duration, args.listener, args.max_bytes, sys.stderr)
    except capture.CaptureError as exc:
        print(f"capture: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(capture.summary(path, result)), file=sys.stderr)
    return EXIT_OK


def replay_command(args: argparse.Namespace) -> int:
    try:
        sent = replay.replay(Path(args.file), args.to, None if args.max else args.speed, args.loops, args.force)
    except replay.ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"replayed {sent.datagrams} datagrams and {sent.chunks} stream chunks over {sent.connections} "
          f"connections ({sent.bytes} bytes)", file=sys.stderr)
    return EXIT_OK
