"""The README a newcomer reads: short, its picture drawn from docs/pipeline.txt, every doc linked, no link broken."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
#: [text](target), the target without a scheme (those leave the repo and are not checked here).
LINK = re.compile(r"\[[^\]]*\]\((?![a-z]+:)([^)\s]*)\)")


def draw_pipeline() -> ModuleType:
    """docs/draw_pipeline.py, a script beside the docs rather than a package."""
    spec = importlib.util.spec_from_file_location("draw_pipeline", REPO / "docs" / "draw_pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where its dataclass looks its annotations up
    spec.loader.exec_module(module)
    return module


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_the_readme_is_at_most_250_lines() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_the_readmes_picture_is_the_one_docs_pipeline_txt_draws() -> None:
    module = draw_pipeline()
    readme = README.read_text()
    assert module.embed(readme, module.draw(module.SOURCE.read_text())) == readme, "run `make docs`"


def test_the_picture_joins_its_boxes_by_labelled_arrows() -> None:
    module = draw_pipeline()
    assert module.draw("# a comment\n[a]\ntext\n-> label\n[bb]\n") == (
        "┌──────┐\n"
        "│ a    │\n"
        "│ text │\n"
        "└───┬──┘\n"
        "    │ label\n"
        "    ▼\n"
        "┌──────┐\n"
        "│ bb   │\n"
        "└──────┘\n")
    with pytest.raises(ValueError, match="line 1: 'text' comes before the first"):
        module.draw("text\n[a]\n")
    with pytest.raises(ValueError, match="leads to no box"):
        module.draw("[a]\n-> nowhere\n")


def test_the_readme_links_every_doc() -> None:
    linked = set(LINK.findall(README.read_text()))
    assert DOCS and not [doc.name for doc in DOCS if f"docs/{doc.name}" not in linked]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: page.name)
def test_every_link_of_the_page_leads_somewhere(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"
