"""Every row of the Guarantees table (docs/guarantees.md) names the tests that prove it
(tests/guarantees_map.py), and every test named exists and is not marked skip.

To add a row: write it in docs/guarantees.md, run this test, and copy the key its failure prints into
tests/guarantees_map.py's PROOFS with the node ids (``path::test_name``) of the tests that prove it, or,
while none does, into UNPROVEN with what a test would have to show. A row's key is its first cell
(``row_key``): rewording the aside in parentheses keeps it, rewording the rest changes it here too.
"""

from __future__ import annotations

import ast
import re
from functools import cache

import pytest

from harness.paths import REPO
from tests.guarantees_map import PROOFS, UNPROVEN

GUARANTEES = REPO / "docs" / "guarantees.md"
HEADER = ("what happens", "what is lost", "how you know")


def row_key(first_cell: str) -> str:
    """The stable part of a row's first cell: backticks dropped, from the first `` (`` on dropped,
    lower case, spaces collapsed."""
    text = first_cell.replace("`", "").split(" (", 1)[0]
    return " ".join(text.lower().split())


def cells(line: str) -> list[str]:
    # A table row: `| a | b | c |`; a `|` inside a cell is written `\|`.
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def table_rows(text: str) -> list[str]:
    """The first cells of the Guarantees table: the table under the header HEADER."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if tuple(c.lower() for c in cells(line)) == HEADER)
    rows = []
    for line in lines[start + 2:]:  # past the header and its --- line
        if not line.startswith("|"):
            break
        row = cells(line)
        assert len(row) == len(HEADER), f"docs/guarantees.md: a row of {len(row)} cells: {line[:80]}"
        rows.append(row[0])
    return rows


@cache
def table_keys() -> tuple[str, ...]:
    return tuple(row_key(cell) for cell in table_rows(GUARANTEES.read_text()))


def test_the_table_is_found_and_its_keys_are_distinct() -> None:
    keys = table_keys()
    assert len(keys) >= 19, keys
    assert len(set(keys)) == len(keys), "two rows share a key: make their first cells differ before any '('"


def test_every_row_is_mapped_or_declared_unproven() -> None:
    missing = [key for key in table_keys() if key not in PROOFS and key not in UNPROVEN]
    assert missing == [], f"rows with no entry in tests/guarantees_map.py (add these keys): {missing}"


def test_every_entry_names_a_row_of_the_table() -> None:
    keys = set(table_keys())
    assert [key for key in [*PROOFS, *UNPROVEN] if key not in keys] == []
    assert set(PROOFS) & set(UNPROVEN) == set(), "a row is either proven or unproven"
    assert [key for key, tests in PROOFS.items() if not tests] == [], "an empty entry belongs in UNPROVEN"


def is_skip(decorator: ast.expr) -> bool:
    """``pytest.mark.skip``/``skipif``, called or not."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr in ("skip", "skipif") and \
        isinstance(target.value, ast.Attribute) and target.value.attr == "mark"


@cache
def module_tests(path: str) -> tuple[dict[str, ast.FunctionDef | ast.AsyncFunctionDef], bool]:
    """The test functions of a test file by name (``Class::name`` in a class), and whether its
    ``pytestmark`` skips the whole module."""
    tree = ast.parse((REPO / path).read_text(), path)
    tests: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    module_skipped = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            tests[node.name] = node
        elif isinstance(node, ast.ClassDef):
            tests.update({f"{node.name}::{f.name}": f for f in node.body
                          if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))})
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                                  for t in node.targets):
            marks = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            module_skipped = any(is_skip(mark) for mark in marks)
    return tests, module_skipped


def mapped_node_ids() -> list[tuple[str, str]]:
    return [(key, node_id) for key, node_ids in PROOFS.items() for node_id in node_ids]


@pytest.mark.parametrize(("key", "node_id"), mapped_node_ids(), ids=[n for _, n in mapped_node_ids()])
def test_each_mapped_test_exists_and_is_not_skipped(key: str, node_id: str) -> None:
    path, _, name = node_id.partition("::")
    assert name, f"{key!r}: {node_id} is not path::test_name"
    assert (REPO / path).is_file(), f"{key!r}: {path} does not exist"
    tests, module_skipped = module_tests(path)
    function = tests.get(re.sub(r"\[.*\]$", "", name))  # a parametrised case by its function's name
    assert function is not None, f"{key!r}: {path} has no test {name}"
    assert function.name.startswith("test"), f"{key!r}: {node_id} is not a test"
    assert not module_skipped, f"{key!r}: {path} is marked skip as a whole"
    assert not any(is_skip(d) for d in function.decorator_list), f"{key!r}: {node_id} is marked skip"


def test_the_row_key_keeps_what_names_the_row() -> None:
    assert row_key("`kill -9` of a shard") == "kill -9 of a shard"
    assert row_key("bad input (any bytes, hostile JSON)") == "bad input"
    assert row_key("`pystatsd reshard N`") == "pystatsd reshard n"
    assert cells(r"| a \| b | c |") == [r"a \| b", "c"]
