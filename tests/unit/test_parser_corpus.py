"""Every datagram in tests/data/datagrams through ``parse_payload``, against its hand-written expectation.

``valid/NNN.txt`` (or ``.bin`` when it holds invalid UTF-8 or control bytes, CR included) is one raw
datagram; ``NNN.json`` beside it holds ``samples`` as ``[name, type, value, rate, [k1, v1, ...]]``,
the ``bad`` counts by reason, optional agent ``defaults`` and a ``description``. ``invalid/`` has the
same layout; its ``samples`` are the good lines that survive beside the bad ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.receiver.parsers import parse_payload

CORPUS = Path(__file__).resolve().parent.parent / "data" / "datagrams"


def corpus_cases() -> list[pytest.param]:
    cases = []
    for kind in ("valid", "invalid"):
        for expected in sorted((CORPUS / kind).glob("*.json")):
            data_files = [p for p in expected.parent.glob(f"{expected.stem}.*") if p.suffix in (".txt", ".bin")]
            cases.append(pytest.param(kind, data_files, expected, id=f"{kind}/{expected.stem}"))
    return cases


CASES = corpus_cases()


def test_corpus_is_present() -> None:
    # A wrong path would otherwise parametrize zero cases and pass silently.
    kinds = [case.values[0] for case in CASES]
    assert kinds.count("valid") >= 24
    assert kinds.count("invalid") >= 36


def test_every_datagram_file_has_an_expectation() -> None:
    for kind in ("valid", "invalid"):
        for data_file in (CORPUS / kind).iterdir():
            assert data_file.with_suffix(".json").exists(), data_file


@pytest.mark.parametrize(("kind", "data_files", "expected_file"), CASES)
def test_datagram_parses_as_expected(kind: str, data_files: list[Path], expected_file: Path) -> None:
    assert len(data_files) == 1, f"{expected_file.stem} needs exactly one .txt or .bin"
    expected = json.loads(expected_file.read_text(encoding="utf-8"))
    # A valid datagram has no bad lines; an invalid one has at least one.
    assert (expected["bad"] == {}) == (kind == "valid")

    out: list[tuple] = []
    bad: dict[str, int] = {}
    parse_payload(data_files[0].read_bytes(), expected.get("defaults", {}), out, bad)

    want = [(name, mtype, value, rate, tuple(tags)) for name, mtype, value, rate, tags in expected["samples"]]
    assert out == want
    # == would let an int value pass for a float; sinks encode 1 and 1.0 differently.
    assert [type(sample[2]) for sample in out] == [type(sample[2]) for sample in want]
    assert bad == expected["bad"]
