"""``pystatsd tap``: the metrics passing one point of a running pipeline, one JSON object a line.

It subscribes with its :class:`~stages.common.tap.TapSpec` to the tap socket of every process of the
stage that shows that point (the receivers for ``received`` and ``mapped``, the forwarder for
``flushed``), as supervisord names them, and looks again every :data:`RESCAN_SECS` (a reshard or a
restart changes nothing here: ZeroMQ reconnects a socket whose stage came back, and resubscribes).
A pipeline that is not running is said so, exit 1; once tapping, a pipeline restarting meanwhile is
waited for.
"""

from __future__ import annotations

import re
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import zmq
from zmq.utils.monitor import recv_monitor_message

from stages.common.process_names import is_process_of
from stages.common.tap import LISTENING, STAGE_OF, TapSpec, tap_endpoint
from stages.control.status import supervisor_processes

#: How often the tap asks supervisord again which processes run (new receivers, a restarted pipeline).
RESCAN_SECS = 1.0
#: What a tap queues before ZeroMQ drops on the stage's side: it prints as fast as it reads.
RECEIVE_QUEUE = 10_000
#: ``--rate`` when not given: metrics a second from each stage process.
DEFAULT_RATE = 100.0

#: Exit status of a tap that found no running pipeline.
EXIT_NOT_RUNNING = 1


class TapArgumentError(ValueError):
    """A tap option that cannot be read; the message names it."""


def parse_rate(text: str) -> float:
    """``100``, ``100/s`` or ``2.5/s``: metrics a second."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(?:/s)?\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise TapArgumentError(f"--rate: {text!r} is not a positive number of metrics a second (100/s)")
    return float(match.group(1))


def parse_tags(texts: list[str]) -> tuple[tuple[str, str], ...]:
    """``--tag K:V`` (each a tag the metric must carry; a bare K or K: asks for the empty value)."""
    pairs = []
    for text in texts:
        key, _, value = text.partition(":")
        if not key:
            raise TapArgumentError(f"--tag: {text!r} has no key (K:V)")
        pairs.append((key, value))
    return tuple(pairs)


def running_processes(run_dir: Path, stage: str) -> list[str]:
    """The processes of ``stage`` supervisord runs in ``run_dir`` (empty when it is not running)."""
    return sorted(name for name, process in supervisor_processes(run_dir).items()
                  if is_process_of(name, stage) and process["state"] == "RUNNING")


def tap(run_dir: Path, spec: TapSpec, count: int | None, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
        processes: Callable[[Path, str], list[str]] = running_processes) -> int:
    """Print what passes ``spec.where`` until ``count`` metrics are printed or the user interrupts."""
    stage = STAGE_OF[spec.where]
    found = processes(run_dir, stage)
    if not found:
        print(f"pystatsd tap: no {stage} is running with run directory {run_dir} (is the pipeline running? "
              "pystatsd status says)", file=err)
        return EXIT_NOT_RUNNING
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, spec.topic())
    # Says on stderr when each stage process listens to this tap (its LISTENING message), and when one
    # went away (a restart).
    monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    #: endpoint → process
    connected: dict[str, str] = {}
    printed = 0
    try:
        next_scan = 0.0
        while count is None or printed < count:
            now = time.monotonic()
            if now >= next_scan:
                next_scan = now + RESCAN_SECS
                for process in found or processes(run_dir, stage):
                    endpoint = tap_endpoint(run_dir, process)
                    if endpoint not in connected:
                        sub.connect(endpoint)
                        connected[endpoint] = process
                found = []
            ready = dict(poller.poll(int(RESCAN_SECS * 1000)))
            if monitor in ready:
                event = recv_monitor_message(monitor)
                process = connected.get(event["endpoint"].decode(), event["endpoint"].decode())
                print(f"pystatsd tap: {process} went away; waiting for it to come back", file=err, flush=True)
            if sub in ready:
                _, body, *sender = sub.recv_multipart()
                if body == LISTENING:
                    print(f"pystatsd tap: tapping {b''.join(sender).decode()} ({spec.where})", file=err, flush=True)
                    continue
                out.write(body.decode() + "\n")
                out.flush()
                printed += 1
    except (KeyboardInterrupt, BrokenPipeError):  # interrupted, or its reader (| head) had enough
        pass
    finally:
        sub.disable_monitor()
        monitor.close(linger=0)
        sub.close(linger=0)
        ctx.term()
    return 0


def new_spec(where: str, match: str | None, tags: list[str], rate: str | None) -> TapSpec:
    """The spec the command line asks for, with a nonce of its own (TapArgumentError naming a bad option)."""
    return TapSpec(where=where, match=match, tags=parse_tags(tags),
                   rate=DEFAULT_RATE if rate is None else parse_rate(rate), nonce=secrets.token_hex(8))
