"""The .deb and .rpm, built once per session by the scripts `make deb` and `make rpm` run."""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.paths import REPO

PACKAGING = REPO / "etc" / "packaging"
#: Both builds together, on a 2-core machine with the pip cache warm, take about 30 s; the first after a
#: new dependency fetches it, beside the rest of the suite.
BUILD_TIMEOUT = 300


@dataclasses.dataclass(frozen=True)
class Packages:
    deb: Path
    rpm: Path


@pytest.fixture(scope="session")
def packages() -> Iterator[Packages]:
    """Build both packages side by side into a temp dir (not dist/: a `make deb` may be running)."""
    with tempfile.TemporaryDirectory(prefix="pst-dist") as dist:
        builds = {kind: subprocess.Popen(["bash", str(PACKAGING / f"build_{kind}.sh"), dist], cwd=REPO,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for kind in ("deb", "rpm")}
        paths = {}
        for kind, build in builds.items():
            out, err = build.communicate(timeout=BUILD_TIMEOUT)
            assert build.returncode == 0, f"build_{kind}.sh failed:\n{out}\n{err}"
            paths[kind] = Path(out.strip().splitlines()[-1])
            assert paths[kind].parent == Path(dist) and paths[kind].exists()
        yield Packages(**paths)
