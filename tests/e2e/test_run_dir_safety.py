"""A run directory another local user could touch is refused before anything is started or written
(issue 23, item 1: root appended supervisord's log to a root-owned file through another user's link).

Each case is set up with a second local user, made for this module and removed after: ``pystatsd
run``, the Makefile's ``make run`` recipe and every stage on its own exit 78 naming the problem, and
nothing is written or created anywhere (the whole test directory is the same before and after).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.paths import REPO, VENV_BIN
from harness.ports import free_port
from stages.common.lifecycle import EXIT_CONFIG
from stages.common.sharding import MAX_IPC_PATH

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int


@pytest.fixture(scope="module")
def other() -> Iterator[OtherUser]:
    """A second local user, who owns what a case plants; removed after the module."""
    if os.geteuid() != 0:
        pytest.skip("makes a second local user: needs root")
    name = f"pst{os.getpid()}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield OtherUser(name, pwd.getpwnam(name).pw_uid)
    finally:
        subprocess.run(["userdel", name], check=False)


@dataclass(frozen=True)
class Case:
    run_dir: Path
    #: What the refusal says (run through str.format with the case's paths and the other user's name).
    message: str


def planted(tmp: Path, other: OtherUser, link: str, target: Path) -> Case:
    """A run directory of root's, 0700, with the other user's ``link`` to ``target`` in it."""
    run = tmp / "run"
    run.mkdir(mode=0o700)
    (run / link).parent.mkdir(mode=0o700, exist_ok=True)
    os.symlink(target, run / link)
    os.lchown(run / link, other.uid, -1)
    return Case(run, f"{run / link} is a link (pystatsd makes none in its run directory): remove it")


def a_root_file(tmp: Path) -> Path:
    secret = tmp / "secret"
    secret.write_text("root's own\n")
    secret.chmod(0o644)
    return secret


def theirs(tmp: Path, other: OtherUser) -> Case:
    run = tmp / "run"
    run.mkdir(mode=0o700)
    os.chown(run, other.uid, -1)
    return Case(run, f"run directory {run} must belong to this user and not be writable by group or others "
                     f"(it is {other.name}'s, mode 0700; chmod 700 it)")


def their_link_in_a_sticky_dir(tmp: Path, other: OtherUser) -> Case:
    """/tmp's case: the other user's symlink, in a sticky directory everyone may write, to a directory of root's."""
    sticky = tmp / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    roots = tmp / "roots"
    roots.mkdir(mode=0o755)
    os.symlink(roots, sticky / "run")
    os.lchown(sticky / "run", other.uid, -1)
    return Case(sticky / "run", f"run directory {sticky / 'run'} is reached through {sticky / 'run'}, a link of user "
                                f"{other.name}, who could point it elsewhere")


def their_directory_on_the_way(tmp: Path, other: OtherUser) -> Case:
    way = tmp / "way"
    way.mkdir(mode=0o755)
    os.chown(way, other.uid, -1)
    (way / "run").mkdir(mode=0o700)
    return Case(way / "run", f"run directory {way / 'run'} is reached through {way}, a directory of user "
                             f"{other.name}, who could replace what is in it")


def supervisord_log_to_a_root_file(tmp: Path, other: OtherUser) -> Case:
    return planted(tmp, other, "supervisord.log", a_root_file(tmp))


def dangling_pid_file(tmp: Path, other: OtherUser) -> Case:
    return planted(tmp, other, "supervisord.pid", tmp / "would-be-created")


def figures_to_a_root_file(tmp: Path, other: OtherUser) -> Case:
    return planted(tmp, other, "figures/forwarder.json", a_root_file(tmp))


def their_lock_file(tmp: Path, other: OtherUser) -> Case:
    run = tmp / "run"
    run.mkdir(mode=0o700)
    (run / "forwarder.lock").write_text("")
    os.chown(run / "forwarder.lock", other.uid, -1)
    return Case(run, f"{run / 'forwarder.lock'} belongs to user {other.name}, not to this user: remove it")


def hard_link_to_a_root_file(tmp: Path, other: OtherUser) -> Case:
    run = tmp / "run"
    run.mkdir(mode=0o700)
    os.link(a_root_file(tmp), run / "ring.json")
    return Case(run, f"{run / 'ring.json'} has another name (a hard link to a file elsewhere): remove it")


def log_dir_others_may_write(tmp: Path, other: OtherUser) -> Case:
    run = tmp / "run"
    run.mkdir(mode=0o700)
    (run / "log").mkdir()
    (run / "log").chmod(0o777)
    return Case(run, f"{run / 'log'} may be written by group or others: remove it")


def too_long_for_its_sockets(tmp: Path, other: OtherUser) -> Case:
    """Not another user's doing, but refused as early: with its sockets' paths past a Unix socket's limit
    a shard could not bind, and would be restarted in a loop."""
    run = tmp / ("r" * max(1, MAX_IPC_PATH - len(str(tmp))))
    return Case(run, f"run directory {run} is too long")


CASES: list[Callable[[Path, OtherUser], Case]] = [
    theirs, their_link_in_a_sticky_dir, their_directory_on_the_way, supervisord_log_to_a_root_file,
    dangling_pid_file, figures_to_a_root_file, their_lock_file, hard_link_to_a_root_file, log_dir_others_may_write,
    too_long_for_its_sockets,
]


def tree(top: Path) -> dict[str, tuple[int, int, int, int, bytes]]:
    """Every path under ``top`` (links not followed): mode, owner, size, mtime and a file's bytes."""
    found = {}
    for directory, names, files in os.walk(top):
        for name in names + files:
            path = Path(directory, name)
            info = os.lstat(path)
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            found[str(path)] = (info.st_mode, info.st_uid, info.st_size, info.st_mtime_ns, data)
    return found


def stage_commands(config: Path, run_dir: Path) -> dict[str, list[str | Path]]:
    common: list[str | Path] = ["-c", config, "--shards", "1", "--run-dir", run_dir]
    return {
        "receiver": [sys.executable, "-m", "stages.receiver", *common, "--name", "receiver"],
        "aggregator": [sys.executable, "-m", "stages.aggregator", *common, "--shard", "0"],
        "forwarder": [sys.executable, "-m", "stages.forwarder", *common],
    }


def make_run_recipe() -> str:
    """The Makefile's ``make run`` recipe, as make runs it from the repo."""
    (recipe,) = re.findall(r"^run: .*\n\t(.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    return recipe.replace("$(VENV)", str(REPO / ".venv"))


@pytest.mark.parametrize("make_case", CASES, ids=[case.__name__ for case in CASES])
def test_a_run_directory_another_user_could_touch_is_refused_and_nothing_is_written(
        tmp_path: Path, other: OtherUser, make_case: Callable[[Path, OtherUser], Case]) -> None:
    config = tmp_path / "pystatsd.yaml"
    config.write_text(f"bind_port: {free_port()}\nforwarders: {{file: {{path: {tmp_path / 'out.jsonl'}}}}}\n")
    case = make_case(tmp_path, other)
    before = tree(tmp_path)
    runs = {"pystatsd run": [VENV_BIN / "pystatsd", "run", "-c", config, "--run-dir", case.run_dir],
            **stage_commands(config, case.run_dir)}
    for what, command in runs.items():
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == EXIT_CONFIG, f"{what}: {result.stderr}"
        assert case.message in result.stderr, f"{what}: {result.stderr}"
        assert tree(tmp_path) == before, what
    # make run as the Makefile says it, its run directory given as systemd gives it.
    result = subprocess.run(["sh", "-c", make_run_recipe()], capture_output=True, text=True, timeout=60, cwd=REPO,
                            env=dict(os.environ, RUNTIME_DIRECTORY=str(case.run_dir)))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert case.message in result.stderr, result.stderr
    assert tree(tmp_path) == before


def test_a_stage_makes_its_own_run_directory_private(tmp_path: Path) -> None:
    """A run directory of this user's that others may read is made 0700 (here by a forwarder that then
    finds another one holding the lock: it starts nothing)."""
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    run.chmod(0o755)
    config = tmp_path / "pystatsd.yaml"
    config.write_text(f"bind_port: {free_port()}\nforwarders: {{file: {{path: {tmp_path / 'out.jsonl'}}}}}\n")
    with (run / "forwarder.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = subprocess.run(stage_commands(config, run)["forwarder"], capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"Another forwarder is already running with run directory {run}" in result.stderr
    assert run.stat().st_mode & 0o777 == 0o700
