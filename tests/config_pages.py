"""The configuration's documentation as the tests read it: docs/configuration.md, then each sink's
page (docs/sinks/, each headed with its sink's name)."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
SINK_PAGES = DOCS / "sinks"
TEXT = "\n".join(path.read_text() for path in [DOCS / "configuration.md", *sorted(SINK_PAGES.glob("*.md"))])
