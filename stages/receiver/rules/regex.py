"""The one regex engine of every rule kind: RE2, with Go's syntax and Go's ``$n`` expansion.

RE2 matches in time linear in the name, so a rule's regex cannot backtrack without bound on a
hostile name (Python's ``re`` can), and its syntax is Go's ``regexp``, the one statsd_exporter's
and DogStatsD's mapping files are written for: a file is read here as it is read there.
"""

from __future__ import annotations

import re as stdlib_re
from typing import Any

import re2

from .kind import RulesError

#: RE2 would print each refused pattern on stderr as well; the refusal names the key instead.
_QUIET = re2.Options()
_QUIET.log_errors = False

#: ``$name``, ``${name}`` or ``$$`` in a template, as Go's ``Regexp.Expand`` reads them.
_REFERENCE = stdlib_re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def compile_regex(pattern: Any, key: str, anchored: bool) -> Any:
    """``pattern`` compiled, matching the whole name when ``anchored``; a refusal names ``key``."""
    if not isinstance(pattern, str) or not pattern:
        raise RulesError(key, f"a regex must be a non-empty string, not {pattern!r}")
    try:
        re2.compile(pattern, options=_QUIET)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise RulesError(key, f"{pattern!r} is not a regex RE2 takes (Go's syntax): {reason}") from None
    return re2.compile(f"^(?:{pattern})$", options=_QUIET) if anchored else re2.compile(pattern, options=_QUIET)


def expand(template: str, match: Any) -> str:
    """``template`` with each ``$n``, ``${n}``, ``$name`` or ``${name}`` replaced as Go's ``Expand`` does:
    the longest run of letters, digits and ``_`` after ``$`` is the reference (``$1x`` is the group
    named ``1x``, so write ``${1}x``); a group out of range, unnamed or unmatched gives ""; ``$$`` gives
    ``$``; a ``$`` that starts no reference stays as it is."""
    if "$" not in template:
        return template
    groups = match.groups()
    names = match.re.groupindex

    def value(ref: stdlib_re.Match[str]) -> str:
        name = ref.group(1) or ref.group(2)
        if name is None:
            return "$"
        if name.isdigit():
            number = int(name)
            if number == 0:
                return str(match.group(0))
            got = groups[number - 1] if number <= len(groups) else None
        else:
            got = match.group(name) if name in names else None
        return got or ""

    return _REFERENCE.sub(value, template)


def check_template(template: str, compiled: Any, key: str) -> None:
    """Refuse, naming ``key``, a ``$`` reference in ``template`` to a group ``compiled`` does not have
    (Go's ``Expand`` would quietly give "" for it: a typo that empties a name or a tag)."""
    for ref in _REFERENCE.finditer(template):
        name = ref.group(1) or ref.group(2)
        if name is None:
            continue
        if name.isdigit() and int(name) <= compiled.groups:
            continue
        if name in compiled.groupindex:
            continue
        groups = f"$0 to ${compiled.groups}" if compiled.groups else "only $0 (the whole name)"
        named = f" and {', '.join(f'${{{n}}}' for n in compiled.groupindex)}" if compiled.groupindex else ""
        raise RulesError(key, f"{template!r} refers to ${{{name}}}, which the match does not capture (it has "
                              f"{groups}{named}; write ${{1}}x for group 1 then x)")
