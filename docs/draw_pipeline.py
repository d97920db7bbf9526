"""Draws README.md's picture of the pipeline from docs/pipeline.txt, between the README's markers.

``make docs`` runs it; with ``--check`` it changes nothing and exits 1 when the README's picture is
not the one the source draws (tests/unit/test_readme.py holds the README to it). Standard library
only: it needs no install.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "docs" / "pipeline.txt"
README = REPO / "README.md"
BEGIN = "<!-- The picture is drawn from docs/pipeline.txt by `make docs`: edit that file, not this block. -->"
END = "<!-- End of the picture. -->"
#: Where every arrow leaves its box: a straight line down the left, its labels beside it.
ARROW_COLUMN = 4


@dataclasses.dataclass
class Box:
    title: str
    lines: list[str] = dataclasses.field(default_factory=list)
    #: The labels of the arrow from this box to the next one.
    arrow: list[str] = dataclasses.field(default_factory=list)


def parse(source: str) -> list[Box]:
    """The boxes of ``source``; ValueError naming the line that does not fit its format."""
    boxes: list[Box] = []
    for number, raw in enumerate(source.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            boxes.append(Box(line[1:-1].strip()))
        elif not boxes:
            raise ValueError(f"line {number}: {line!r} comes before the first [box]")
        elif line.startswith("->"):
            boxes[-1].arrow.append(line[2:].strip())
        elif boxes[-1].arrow:
            raise ValueError(f"line {number}: {line!r} is box text after the box's arrow")
        else:
            boxes[-1].lines.append(line)
    if not boxes:
        raise ValueError("no [box] in the source")
    if boxes[-1].arrow:
        raise ValueError("the last box's arrow leads to no box")
    return boxes


def draw(source: str) -> str:
    """The picture: the boxes one under the other, each as wide as the widest, joined by arrows."""
    boxes = parse(source)
    width = max(len(text) for box in boxes for text in (box.title, *box.lines)) + 2
    rows: list[str] = []
    for index, box in enumerate(boxes):
        rows.append("┌" + "─" * width + "┐")
        rows += [f"│ {text.ljust(width - 1)}│" for text in (box.title, *box.lines)]
        if index == len(boxes) - 1:
            rows.append("└" + "─" * width + "┘")
            continue
        rows.append("└" + "─" * (ARROW_COLUMN - 1) + "┬" + "─" * (width - ARROW_COLUMN) + "┘")
        rows += [" " * ARROW_COLUMN + "│ " + label for label in box.arrow]
        rows.append(" " * ARROW_COLUMN + "▼")
    return "\n".join(rows) + "\n"


def embed(readme: str, picture: str) -> str:
    """``readme`` with ``picture`` as the text block between its markers."""
    before, begin, rest = readme.partition(BEGIN)
    _, end, after = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the README has no {BEGIN!r} ... {END!r} block")
    return f"{before}{BEGIN}\n```text\n{picture}```\n{END}{after}"


def main(argv: list[str]) -> int:
    readme = README.read_text()
    drawn = embed(readme, draw(SOURCE.read_text()))
    if drawn == readme:
        return 0
    if "--check" in argv:
        print("README.md's picture is not what docs/pipeline.txt draws: run `make docs`", file=sys.stderr)
        return 1
    README.write_text(drawn)
    print("README.md: the picture redrawn from docs/pipeline.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
