"""The .deb and .rpm: names, metadata, file lists, maintainer scripts and the systemd unit; then the
.deb installed into a throwaway root and its `pystatsd run` started there.

The throwaway root is dpkg's own: ``dpkg --root=DIR --force-script-chrootless`` unpacks into DIR and
runs the real maintainer scripts on this machine with ``DPKG_ROOT=DIR``, which they honour (the
user goes into DIR/etc/passwd, the unit is enabled in DIR/etc/systemd). ``--force-depends``: DIR's
empty dpkg database does not know python3.11. systemd itself is not running here, so starting the
unit is not tested; ``systemd-analyze verify`` checks it.
"""

from __future__ import annotations

import configparser
import io
import marshal
import os
import platform
import re
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import tempfile
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import stages
from harness.paths import REPO
from harness.pipeline import Pipeline
from harness.wait import wait_for
from tests.packaging.conftest import BUILD_TIMEOUT, Packages

# The builds (the session fixture, set up under the first test's timeout) take 30 s on a quiet machine,
# minutes on a busy one: BUILD_TIMEOUT bounds them.
pytestmark = [pytest.mark.packaging, pytest.mark.timeout(BUILD_TIMEOUT + 60)]

PREFIX = "/opt/pystatsd"
CONFIG = "/etc/pystatsd/pystatsd.conf"
UNIT = "/usr/lib/systemd/system/pystatsd.service"
NOBODY = 65534


def package_version() -> str:
    """The project's version as deb and rpm order it: a pre-release sorts before its release."""
    return re.sub(r"\.?(dev|a|b|rc)(\d+)$", r"~\1\2", stages.__version__)


def run(*command: str | Path, check: bool = True, **options: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=60,
                            **options)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        shown = " ".join(map(str, command))
        raise AssertionError(f"{shown} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def deb_members(deb: Path) -> dict[str, tarfile.TarInfo]:
    """Installed path → tar entry of the .deb's data."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {"/" + m.name.removeprefix("./").rstrip("/"): m for m in tar.getmembers()
                if m.name not in (".", "./")}


def deb_file(deb: Path, path: str) -> bytes:
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        handle = tar.extractfile("." + path)
        assert handle is not None, path
        return handle.read()


def rpm_files(rpm: Path) -> dict[str, tuple[int, str, str, str]]:
    """Path → (mode, user, group, flags) of every file the .rpm owns."""
    fields = "%{FILENAMES}\t%{FILEMODES}\t%{FILEUSERNAME}\t%{FILEGROUPNAME}\t%{FILEFLAGS:fflags}\n"
    out = run("rpm", "-qp", "--qf", f"[{fields}]", rpm).stdout
    files = {}
    for line in out.splitlines():
        path, mode, user, group, flags = line.split("\t")
        files[path] = (int(mode) & 0xFFFF, user, group, flags)
    return files


def venv_python(members: dict[str, tarfile.TarInfo]) -> str:
    """The interpreter the packaged virtualenv runs on, e.g. ``python3.11``."""
    (name,) = [p.rsplit("/", 1)[1] for p in members if re.fullmatch(rf"{PREFIX}/bin/python3\.\d+", p)]
    return name


def dependency_names() -> list[str]:
    """The project's runtime dependencies, normalised as dist-info directories spell them."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return [re.sub(r"[-_.]+", "_", re.match(r"[A-Za-z0-9._-]+", dep).group(0)).lower()  # type: ignore[union-attr]
            for dep in deps]


def test_file_names(packages: Packages) -> None:
    arch = run("dpkg", "--print-architecture").stdout.strip()
    assert packages.deb.name == f"pystatsd_{package_version()}_{arch}.deb"
    assert packages.rpm.name == f"pystatsd-{package_version()}-1.{platform.machine()}.rpm"


def test_deb_metadata_and_maintainer_scripts(packages: Packages, tmp_path: Path) -> None:
    fields = run("dpkg-deb", "-f", packages.deb, "Package", "Version", "Architecture", "Depends").stdout
    assert "Package: pystatsd\n" in fields
    assert f"Version: {package_version()}\n" in fields
    python = venv_python(deb_members(packages.deb))
    assert re.search(rf"^Depends: (.*, )?{re.escape(python)}(,|$)", fields, re.MULTILINE), fields
    control = tmp_path / "DEBIAN"
    run("dpkg-deb", "-e", packages.deb, control)
    assert (control / "conffiles").read_text().split() == [CONFIG]
    for script in ("postinst", "prerm", "postrm"):
        path = control / script
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
        run("sh", "-n", path)
        text = path.read_text()
        # Self-contained: nothing is fetched or built at install time (the original's rpm ran pip).
        assert not re.search(r"\b(pip|curl|wget)\b", text), script
    postinst = (control / "postinst").read_text()
    assert "useradd" in postinst and "--system" in postinst
    assert "chmod 0640" in postinst


def test_deb_contents(packages: Packages) -> None:
    members = deb_members(packages.deb)
    for path, member in members.items():
        assert (member.uid, member.gid) == (0, 0), f"{path} is not owned by root"
        if not member.issym():
            assert not member.mode & 0o022, f"{path} is writable by group or others"
            assert member.mode & 0o004, f"{path} is not world-readable (the service user could not read it)"
    python = venv_python(members)
    assert members["/usr/bin/pystatsd"].linkname == f"{PREFIX}/bin/pystatsd"
    assert members[f"{PREFIX}/bin/{python}"].linkname == f"/usr/bin/{python}"
    for path in (CONFIG, UNIT, f"{PREFIX}/bin/pystatsd", f"{PREFIX}/bin/supervisord",
                 f"{PREFIX}/share/pystatsd/supervisord.conf"):
        assert path in members, f"{path} is missing"
    assert deb_file(packages.deb, CONFIG) == (REPO / "etc" / "pystatsd.yaml").read_bytes()
    template = deb_file(packages.deb, f"{PREFIX}/share/pystatsd/supervisord.conf")
    assert template == (REPO / "supervisord.conf").read_bytes()
    site = f"{PREFIX}/lib/{python}/site-packages"
    assert f"{site}/stages/control/cli.py" in members
    assert f"{site}/pystatsd/client.py" in members, "the client library is not in the package"
    installed = {p.rsplit("/", 1)[1].split("-")[0].lower() for p in members if p.endswith(".dist-info")}
    missing = [name for name in dependency_names() if name not in installed]
    assert not missing, f"dependencies missing from the virtualenv: {missing}"
    assert deb_file(packages.deb, f"{PREFIX}/bin/pystatsd").startswith(f"#!{PREFIX}/bin/python".encode())
    # Compiled at build time under the installed paths, so tracebacks name real files.
    pyc = deb_file(packages.deb, f"{site}/stages/control/__pycache__/cli.cpython-{python[6:].replace('.', '')}.pyc")
    assert marshal.loads(pyc[16:]).co_filename == f"{site}/stages/control/cli.py"


def test_rpm_metadata_files_and_scripts(packages: Packages) -> None:
    info = run("rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}", packages.rpm).stdout
    assert info == f"pystatsd {package_version()} 1 {platform.machine()}"
    requires = run("rpm", "-qp", "--requires", packages.rpm).stdout.split("\n")
    assert any(re.fullmatch(r"/usr/bin/python3\.\d+", r.strip()) for r in requires), requires
    assert "/usr/sbin/useradd" in requires
    files = rpm_files(packages.rpm)
    mode, user, group, flags = files[CONFIG]
    assert (stat.S_IMODE(mode), user, group) == (0o640, "root", "pystatsd")
    assert set(flags) == {"c", "n"}, "the config must be %config(noreplace): an upgrade never overwrites it"
    # The same tree as the .deb: every file and symlink (rpm lists only the directories it owns).
    rpm_leaves = {p for p, (m, *_) in files.items() if not stat.S_ISDIR(m)}
    deb_leaves = {p for p, m in deb_members(packages.deb).items() if not m.isdir()}
    assert rpm_leaves == deb_leaves
    scripts = run("rpm", "-qp", "--scripts", packages.rpm).stdout
    for scriptlet in ("preinstall", "postinstall", "preuninstall", "postuninstall"):
        assert f"{scriptlet} scriptlet" in scripts
    assert "useradd" in scripts
    assert not re.search(r"\b(pip|curl|wget)\b", scripts)


def test_unit(packages: Packages, tmp_path: Path) -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(deb_file(packages.deb, UNIT).decode())
    service = unit["Service"]
    assert service["ExecStart"] == "/usr/bin/pystatsd run"
    assert (service["User"], service["Group"]) == ("pystatsd", "pystatsd")
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "78"
    assert service["RuntimeDirectory"] == "pystatsd"
    assert service["UMask"] == "0077"
    assert service["ExecReload"] == "/usr/bin/pystatsd reload"
    assert (service["StandardOutput"], service["StandardError"]) == ("journal", "journal")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed: the unit was checked by its keys only")
    # verify resolves ExecStart and the default dependencies inside --root: give it the package's
    # files and this machine's targets.
    run("dpkg-deb", "-x", packages.deb, tmp_path)
    units = tmp_path / "usr/lib/systemd/system"
    host_units = next((d for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                       if (d / "sysinit.target").exists()), None)
    if host_units is None:
        pytest.skip("no systemd targets on this machine to verify the unit against")
    for target in [*host_units.glob("*.target"), *host_units.glob("*.slice")]:
        shutil.copy(target, units)
    result = run("systemd-analyze", f"--root={tmp_path}", "verify", "pystatsd.service", check=False)
    # verify exits 0 on mere warnings (a misspelt value is "ignoring"): no output at all is the bar.
    assert result.returncode == 0 and not result.stdout + result.stderr, result.stdout + result.stderr


# The .deb installed into a throwaway root.

def dpkg(root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run("dpkg", f"--root={root}", f"--log={root}/var/log/dpkg.log", "--force-script-chrootless",
               "--force-depends", *args)


@pytest.fixture(scope="module")
def installed(packages: Packages) -> Iterator[Path]:
    """A root with nothing but an empty dpkg database and root's user, the .deb installed in it."""
    if os.geteuid() != 0:
        pytest.skip("installing with dpkg --root needs root")
    root = Path(tempfile.mkdtemp(prefix="pst-root"))
    try:
        root.chmod(0o755)  # the service user must reach /opt/pystatsd inside it
        (root / "var/lib/dpkg/info").mkdir(parents=True)
        (root / "var/lib/dpkg/updates").mkdir()
        (root / "var/lib/dpkg/status").touch()
        (root / "var/log").mkdir()
        (root / "etc").mkdir()
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc/group").write_text("root:x:0:\n")
        dpkg(root, "-i", packages.deb)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def installed_python(root: Path) -> list[str]:
    """How to run the installed command: its own interpreter (its #! names /opt, not the root)."""
    return [f"{root}{PREFIX}/bin/python", f"{root}{PREFIX}/bin/pystatsd"]


def clean_env() -> dict[str, str]:
    """This environment without what would let the repo's code in."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSTATSD_CONFIG", "VIRTUAL_ENV")}


def test_install_creates_the_user_owns_the_config_and_enables_the_unit(installed: Path) -> None:
    status = run("dpkg", f"--root={installed}", "-s", "pystatsd").stdout
    assert "Status: install ok installed" in status
    users = {line.split(":")[0]: line.split(":") for line in (installed / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (installed / "etc/group").read_text().splitlines()}
    user = users["pystatsd"]
    assert int(user[2]) < 1000 and user[5] == "/nonexistent" and user[6] == "/usr/sbin/nologin"
    config = (installed / CONFIG.lstrip("/")).stat()
    assert stat.S_IMODE(config.st_mode) == 0o640
    assert (config.st_uid, config.st_gid) == (0, int(groups["pystatsd"][2]))
    wants = installed / "etc/systemd/system/multi-user.target.wants/pystatsd.service"
    assert os.readlink(wants) == UNIT


def test_installed_command(installed: Path) -> None:
    command = installed_python(installed)
    assert run(*command, "version", env=clean_env(), cwd="/").stdout == f"pystatsd {stages.__version__}\n"
    for module in ("stages", "pystatsd.client"):
        where = run(f"{installed}{PREFIX}/bin/python", "-c", f"import {module}; print({module}.__file__)",
                    env=clean_env(), cwd="/").stdout
        assert where.startswith(f"{installed}{PREFIX}/lib/"), where
    checked = run(*command, "check-config", "-c", f"{installed}{CONFIG}", env=clean_env(), cwd="/")
    assert checked.stdout.endswith(": OK\n")
    bad = installed / "tmp-bad.yaml"
    bad.write_text("flush_intervall: 10\n")
    result = run(*command, "check-config", "-c", bad, env=clean_env(), cwd="/", check=False)
    assert result.returncode == 78 and "flush_intervall: unknown key" in result.stderr
    bad.unlink()


def test_installed_run_as_an_unprivileged_user_with_its_logs_on_a_journal_like_socket(installed: Path) -> None:
    """The unit's setting, short of systemd: the installed config on free ports, a user that owns
    nothing of the package, stdout and stderr a socket as the journal's are."""
    pipeline = Pipeline()
    config = yaml.safe_load((installed / CONFIG.lstrip("/")).read_text())
    config.update(bind_port=pipeline.port, listeners=[f"udp://127.0.0.1:{pipeline.statsd_port}"], flush_interval=1,
                  forwarders={**config["forwarders"], "file": {"path": str(pipeline.out_path)}})
    pipeline.config_path.write_text(yaml.safe_dump(config))
    for path in [pipeline.dir, *pipeline.dir.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    journal, stream = socket.socketpair()
    received = bytearray()
    reader = threading.Thread(target=lambda: _read_all(journal, received), daemon=True)
    reader.start()
    proc = subprocess.Popen([*installed_python(installed), "run", "-c", str(pipeline.config_path),
                             "--run-dir", str(pipeline.run_dir)],
                            stdout=stream, stderr=stream, cwd="/", env=clean_env(),
                            user=NOBODY, group=NOBODY, extra_groups=[])
    stream.close()
    try:
        wait_for(pipeline.all_running, 30, "every installed stage to be RUNNING")
        rendered = (pipeline.run_dir / "supervisord.conf").read_text()
        # forwarder, aggregator, receiver, receiver-extra
        assert rendered.count(f"command = {installed}{PREFIX}/bin/python -m stages.") == 4
        assert str(REPO) not in rendered
        assert _uid(proc.pid) == NOBODY
        pipeline.wait_interval_start()
        pipeline.send('{"metric_name": "installed.check", "metric_type": "counter", "count": 3, "via": "deb"}')
        (aggregate,) = pipeline.wait_series("installed.check", settle=False)
        assert (aggregate["value"], aggregate["tags"]) == (3.0, {"via": "deb"})
        # The stages' logs and the console sink go to stdout: under systemd, the journal.
        wait_for(lambda: b'"name":"installed.check"' in received, 10, "the console sink's line on the socket")
        text = received.decode(errors="replace")
        assert "receiver INFO" in text and "forwarder INFO" in text, text[-2000:]
        assert not list((pipeline.run_dir / "log").iterdir()), "a stage logged to a file instead of stdout"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        reader.join(timeout=10)
        assert "stopped: forwarder (exit status 0)" in received.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        journal.close()
        pipeline.sock.close()
        pipeline.cleanup()


def _read_all(sock: socket.socket, into: bytearray) -> None:
    try:
        while chunk := sock.recv(65536):
            into.extend(chunk)
    except OSError:
        pass  # closed by the test on its way out after a failure


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


def test_upgrade_keeps_the_edited_config_remove_keeps_it_purge_deletes_it(installed: Path, packages: Packages) -> None:
    config = installed / CONFIG.lstrip("/")
    edited = config.read_text() + "# edited by the admin\n"
    config.write_text(edited)
    dpkg(installed, "-i", packages.deb)  # the same version again: dpkg's upgrade path
    assert config.read_text() == edited
    dpkg(installed, "-r", "pystatsd")
    assert config.read_text() == edited, "a removed package keeps its config until purged"
    assert not (installed / PREFIX.lstrip("/")).exists()
    assert not (installed / "usr/bin/pystatsd").is_symlink()
    assert not (installed / "etc/systemd/system/multi-user.target.wants/pystatsd.service").is_symlink()
    dpkg(installed, "-P", "pystatsd")
    assert not config.exists()
