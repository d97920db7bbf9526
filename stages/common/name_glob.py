"""The name globs of the config: ``*`` matches within one dot-separated component, all else itself.

One syntax for every key that matches a metric name by glob: the receiver's rules (``rules[i].match``)
and the shards' ``histogram_buckets[i].match``. RE2 matches them, in time linear in the name.
"""

from __future__ import annotations

from typing import Any

import re2

#: What a ``*`` of a name glob matches: within one dot-separated component, captured (a rule's ``$1``).
NAME_STAR = "([^.]*)"


def glob_regex(glob: str, star: str) -> str:
    """The regex of ``glob``: each ``*`` becomes ``star`` (a rule kind says what its star matches, e.g.
    :data:`NAME_STAR`: within one dot-separated component), every other character stands for itself."""
    return star.join(re2.escape(part) for part in glob.split("*"))


def text_problem(text: str) -> str | None:
    """Why ``text`` can be no name, tag or glob of one (empty, or holding a control character: a series
    key is built with one), or None."""
    if not text:
        return "must not be empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return f"{text!r} holds a control character"
    return None


def compile_name_glob(glob: str) -> Any:
    """``glob`` as an RE2 pattern that matches a whole name (``fullmatch`` not needed: it is anchored)."""
    return re2.compile(f"^(?:{glob_regex(glob, NAME_STAR)})$")
