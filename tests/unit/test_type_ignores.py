"""Types hold where the daemon, the client library and the benchmark are checked: at most a few
``type: ignore`` there, each naming its error code and saying why, so none creeps back unexplained."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("stages", "pystatsd", "bench")
MOST = 6
#: ``# type: ignore[code]  # why``: an error code, then a comment that gives the reason.
EXPLAINED = re.compile(r"# type: ignore\[[a-z-]+(, ?[a-z-]+)*\]  # \S")


def ignores() -> list[str]:
    return [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for folder in CHECKED for path in sorted((ROOT / folder).rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1) if "type: ignore" in line]


def test_at_most_a_few_type_ignores_each_with_its_code_and_reason() -> None:
    found = ignores()
    assert len(found) <= MOST, "\n".join(found)
    assert [line for line in found if not EXPLAINED.search(line)] == []


def test_an_ignore_without_a_reason_is_caught() -> None:
    assert not EXPLAINED.search("x = f()  # type: ignore[misc]")
    assert not EXPLAINED.search("x = f()  # type: ignore  # untyped")
    assert EXPLAINED.search("x = f()  # type: ignore[misc]  # supervisor is untyped")
