"""Whether a run directory may be used: nobody but this user (and root) can put, replace or redirect
anything in it, or on the way to it.

pystatsd often runs as root, and root writes its run directory: supervisord's log and pid file,
sockets, locks, figures, config copies, the ledger. A link another user planted there (or on the
way there: another user's symlink in /tmp to a directory of root's) would have root write where the
link points. So one check, :func:`run_dir_problems`, before anything is started or written there, by
``pystatsd run`` (before supervisord opens its files), by every stage, and by the commands that use
a running instance's run directory (status, restart, reshard, reload):

1. the path, component by component from ``/``: each directory and each link on the way belongs
   to root or to this user; a directory on the way is not writable by group or others unless it is
   sticky (``/tmp``: then only an entry's owner may replace it, and the entry taken is root's or
   this user's); links are followed (at most :data:`MAX_LINKS`) under the same rule;
2. the run directory itself belongs to this user and is not writable by group or others (a sticky
   bit is no help there);
3. its path leaves room for its sockets' (a Unix socket's path has at most
   :data:`~stages.common.sharding.MAX_IPC_PATH` characters; longer, a shard could not bind and
   would be restarted in a loop);
4. every entry in it and in its subdirectories: not a link (pystatsd makes none), this user's, not
   writable by group or others (a socket is exempt: its write bit only lets a client connect), and a
   regular file has no other name (a hard link to a file elsewhere).

Once it passes, only this user and root can add anything there, so nothing can be planted after the
check. :func:`make_run_dir` creates what is missing one directory at a time (0700, each checked as
it is made, so nothing is created through a link) and makes the run directory 0700.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from stages.common.process_names import AGGREGATOR, process_name
from stages.common.sharding import MAX_IPC_PATH
from stages.common.tap import tap_path

#: The longest socket path a run directory holds, relative to it: the tap socket of shard 99.
LONGEST_SOCKET = tap_path("", process_name(AGGREGATOR, 99))
#: Links followed on the way to the run directory before it is refused (the kernel's own limit).
MAX_LINKS = 40


def run_dir_problems(path: Path) -> list[str]:
    """Why the run directory ``path`` must not be used (every problem, each naming its file); empty
    when it may. A run directory that does not exist yet has only the way to it checked."""
    return _check(Path(path).absolute(), create=False)


def make_run_dir(path: Path) -> list[str]:
    """Create the run directory ``path`` (and what is missing on the way, 0700) and make it 0700, unless
    :func:`run_dir_problems` finds a problem, which is returned instead (nothing made beyond it)."""
    return _check(Path(path).absolute(), create=True)


def _check(path: Path, create: bool) -> list[str]:
    too_long = _length_problems(path)
    return _safety_problems(path, create and not too_long) + too_long


def _length_problems(path: Path) -> list[str]:
    if len(str(path / LONGEST_SOCKET)) <= MAX_IPC_PATH:
        return []
    return [f"run directory {path} is too long ({len(str(path))} characters): the paths of its sockets "
            f"({path / LONGEST_SOCKET}) would pass the {MAX_IPC_PATH} characters a Unix socket's may "
            "have; choose a shorter run_dir (or --run-dir)"]


def _safety_problems(path: Path, create: bool) -> list[str]:
    real, problem = _walk(path, create)
    if problem is not None:
        return [problem]
    if real is None:
        return []
    info = os.lstat(real)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        return [f"run directory {path} must belong to this user and not be writable by group or others "
                f"(it is {_owner(info.st_uid)}'s, mode {stat.S_IMODE(info.st_mode):04o}; chmod 700 it)"]
    problems = _entry_problems(real, path)
    if create and not problems and info.st_mode & 0o077:
        os.chmod(real, 0o700)
    return problems


def _walk(path: Path, create: bool) -> tuple[Path | None, str | None]:
    """Follow ``path`` from ``/`` as the kernel would, checking each step (rule 1): (the directory it
    reaches, with no link left in it, or None when it does not exist; the first problem or None)."""
    trusted = {0, os.geteuid()}
    current = Path("/")
    info = os.lstat(current)
    if info.st_uid != 0 or info.st_mode & 0o022:
        return None, f"run directory {path}: / may be written by others than root"
    pending = list(path.parts[1:])
    links = 0
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            current = current.parent
            continue
        entry = current / name
        try:
            found = _lstat_or_make(entry, create)
        except OSError as exc:
            return None, f"run directory {path}: cannot make {entry}: {exc.strerror}"
        if found is None:
            return None, None
        info = found
        kind = "link" if stat.S_ISLNK(info.st_mode) else "directory"
        # The run directory's own owner and mode are rule 2's (_check).
        if info.st_uid not in trusted and (pending or kind == "link"):
            could = "point it elsewhere" if kind == "link" else "replace what is in it"
            return None, (f"run directory {path} is reached through {entry}, a {kind} of user "
                          f"{_owner(info.st_uid)}, who could {could}: use a path only root or this user owns")
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > MAX_LINKS:
                return None, f"run directory {path}: more than {MAX_LINKS} links on the way"
            target = Path(os.readlink(entry))
            if target.is_absolute():
                current = Path("/")
            pending[:0] = target.parts[1:] if target.is_absolute() else target.parts
            continue
        if not stat.S_ISDIR(info.st_mode):
            return None, f"run directory {path}: {entry} is not a directory"
        # A sticky directory on the way is safe: only an entry's owner may replace it.
        if pending and info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            return None, (f"run directory {path} is reached through {entry}, which group or others may "
                          "write (they could replace what follows): use a path only root or this user may write")
        current = entry
    return current, None


def _lstat_or_make(entry: Path, create: bool) -> os.stat_result | None:
    """``entry``'s own status (a link's, not its target's); None when it does not exist and is not to
    be made. Made here, it is a new directory (0700): mkdir neither follows a link nor reuses one."""
    try:
        return os.lstat(entry)
    except FileNotFoundError:
        if not create:
            return None
    try:
        os.mkdir(entry, 0o700)
    except FileExistsError:
        pass  # made meanwhile (by whom is what the caller checks next)
    return os.lstat(entry)


def _entry_problems(directory: Path, shown: Path) -> list[str]:
    """Rule 3 for every entry under ``directory`` (named as under ``shown``, the path as given)."""
    problems = []
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        return [f"{shown}: cannot list it: {exc.strerror}"]
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # a stage's temporary file, renamed or removed meanwhile
        name = shown / entry.name
        if stat.S_ISLNK(info.st_mode):
            problems.append(f"{name} is a link (pystatsd makes none in its run directory): remove it")
        elif info.st_uid != os.geteuid():
            problems.append(f"{name} belongs to user {_owner(info.st_uid)}, not to this user: remove it")
        elif info.st_mode & 0o022 and not stat.S_ISSOCK(info.st_mode):
            problems.append(f"{name} may be written by group or others: remove it")
        elif stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            problems.append(f"{name} has another name (a hard link to a file elsewhere): remove it")
        elif stat.S_ISDIR(info.st_mode):
            problems += _entry_problems(Path(entry.path), name)
    return problems


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
