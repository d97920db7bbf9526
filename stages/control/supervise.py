"""supervisord in the foreground, giving up once every stage has: what ``pystatsd run`` execs.

``pystatsd run`` becomes supervisord: systemd's main pid, its signals, its stdout. This module runs
supervisord's own ``main()`` in this process (``python -m stages.control.supervise RUN_DIR`` is
``supervisord -n -c RUN_DIR/supervisord.conf``), watching its process state events.
When a stage ends FATAL or EXITED (and will not be restarted) while no stage is left running or
starting, it prints each stage's reason on stderr (the start error it left in its figures, else its
state) and asks supervisord to shut down, as SIGTERM does; the process then exits 78 (EX_CONFIG, which
the systemd unit does not restart) instead of supervisord's 0. Without it supervisord stays up with
nothing running, and ``pystatsd run`` hangs.

Why not an ``[eventlistener]``: it would be one more process in every list of the instance's
processes (``supervisorctl status``, ``pystatsd status``, the SIGHUP that ``pystatsd reload`` sends
to all), and a program cannot set supervisord's exit code; a wrapper that forks supervisord would no
longer be it (signals forwarded, two pids for systemd). Here there is one process, supervisord's own
signal handling, and only its exit code decided after its main loop has returned.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from supervisor import events, supervisord
from supervisor.datatypes import RestartUnconditionally
from supervisor.states import ProcessStates, SupervisorStates, getProcessStateDescription

from stages.common.lifecycle import EXIT_CONFIG, EXIT_OK
from stages.control.status import process_reasons, stage_order
from stages.rundir.figures import START_ERROR, read_all

log = logging.getLogger(__name__)

#: The states of a process that runs or is about to (a STOPPED one that never started is about to).
ALIVE = (ProcessStates.STARTING, ProcessStates.RUNNING, ProcessStates.BACKOFF, ProcessStates.STOPPING)


class GiveUpWatch:
    """Shuts supervisord down, once, when a stage ended and none is left running or starting."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        #: supervisord's own object, once it runs (its process_groups are the instance's processes).
        self.supervisor: Any = None
        #: Why each stage ended, once the watch gave up; empty while it has not.
        self.reasons: list[str] = []

    def on_state(self, event: Any) -> None:
        if self.reasons or not isinstance(event, events.ProcessStateFatalEvent | events.ProcessStateExitedEvent):
            return
        options = self.supervisor.options
        processes = [p for group in self.supervisor.process_groups.values() for p in group.processes.values()]
        if options.mood != SupervisorStates.RUNNING or any(alive(p) for p in processes):
            return
        self.reasons = stage_reasons(processes, read_all(self.run_dir))
        print(f"pystatsd gives up: no stage is left running ({len(self.reasons)} ended)", file=sys.stderr)
        for reason in self.reasons:
            print(f"  {reason}", file=sys.stderr)
        sys.stderr.flush()
        options.logger.critical("no stage is left running: shutting down (exit 78)")
        options.mood = SupervisorStates.SHUTDOWN  # what supervisord's SIGTERM handler does


def watched(watch: GiveUpWatch) -> type:
    """supervisord's Supervisor, with ``watch`` on its process state events from the start of its main
    loop (its run() clears every subscription first, then adds the process groups)."""

    class WatchedSupervisor(supervisord.Supervisor):  # type: ignore[misc]  # supervisor is untyped
        def runforever(self) -> None:
            watch.supervisor = self
            events.subscribe(events.ProcessStateEvent, watch.on_state)
            super().runforever()

    return WatchedSupervisor


def alive(process: Any) -> bool:
    """Whether ``process`` runs, or supervisord will start it (again)."""
    state = process.get_state()
    if state == ProcessStates.STOPPED:
        return not process.laststart
    if state == ProcessStates.EXITED:
        autorestart = process.config.autorestart
        return autorestart is RestartUnconditionally or (
            bool(autorestart) and process.exitstatus not in process.config.exitcodes)
    return state in ALIVE


def stage_reasons(processes: list[Any], records: dict[str, dict[str, Any]]) -> list[str]:
    """Each ended stage's reason, in stage order: its start error, else supervisord's state."""
    states = {p.config.name: {"state": getProcessStateDescription(p.get_state()), "exit_status": p.exitstatus,
                              "description": ""} for p in processes}
    errors = {name: record["figures"][START_ERROR] for name, record in records.items()
              if name in states and START_ERROR in record.get("figures", {})}
    lines = {name: f"{name}: cannot start: {error}" for name, error in errors.items()}
    for line in process_reasons(states, records):
        lines[line.split(":", 1)[0]] = line
    return [lines[name] for name in sorted(lines, key=stage_order)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m stages.control.supervise RUN_DIR (supervisord -n -c RUN_DIR/supervisord.conf)",
              file=sys.stderr)
        return EXIT_CONFIG
    run_dir = Path(args[0])
    watch = GiveUpWatch(run_dir)
    # supervisord.go() makes its Supervisor by this module-level name, at each (re)start.
    supervisord.Supervisor = watched(watch)
    supervisord.main(["-n", "-c", str(run_dir / "supervisord.conf")])
    return EXIT_CONFIG if watch.reasons else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
