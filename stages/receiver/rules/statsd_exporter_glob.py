"""statsd_exporter 0.31's glob matcher, ported line for line: its FSM, its backtracking test and its
``$n`` template formatter (``pkg/mapper/fsm`` there).

Ported rather than rewritten as regexes because its answers are the FSM's, quirks included, and a
user's mapping file was tuned against them: a ``*`` is one whole dot-separated component, a
literal component is tried before ``*``, and with ordering on every path is searched and the
glob written first wins; with ``glob_disable_ordering`` the first final state found wins and
``*`` is only tried where :func:`backtracking_needed` says so. A final state is marked only when
the pattern creates it, so a glob that ends on a state an earlier, longer glob made never
matches; a repeated glob keeps its first mapping but takes the priority of its last copy.
"""

from __future__ import annotations

import logging
from typing import Any

from .regex import compile_regex

log = logging.getLogger(__name__)

#: The three first states, one per kind of event statsd_exporter maps.
METRIC_TYPES = ("counter", "gauge", "observer")


class _State:
    __slots__ = ("transitions", "min_remaining", "max_remaining", "result", "priority")

    def __init__(self, remaining: int = 0) -> None:
        self.transitions: dict[str, _State] = {}
        self.min_remaining = remaining
        self.max_remaining = remaining
        self.result: Any = None
        self.priority = 0

    def fits(self, left: int) -> bool:
        """Whether a name with ``left`` components after this one can still end on a glob through here."""
        return self.min_remaining <= left <= self.max_remaining


class GlobFSM:
    """The globs of one file, one first state per metric type (fsm.FSM)."""

    def __init__(self, ordering_disabled: bool) -> None:
        self.root = _State()
        self.root.transitions = {kind: _State() for kind in METRIC_TYPES}
        self.ordering_disabled = ordering_disabled
        self.backtracking_needed = False
        self.states_count = 0

    def add(self, match: str, metric_type: str, result: Any) -> int:
        """Adds the glob ``match`` (for ``metric_type``, every type when empty) ending on ``result``;
        returns how many ``*`` it captures (AddState)."""
        fields = match.split(".")
        roots = [self.root.transitions[metric_type]] if metric_type else list(self.root.transitions.values())
        capture_count = 0
        finals = []
        for root in roots:
            capture_count = 0
            state = root
            for i, field in enumerate(fields):
                remaining = len(fields) - i - 1
                following = state.transitions.get(field)
                if following is None:
                    following = _State(remaining)
                    state.transitions[field] = following
                    if i == len(fields) - 1:
                        following.result = result
                else:
                    following.max_remaining = max(remaining, following.max_remaining)
                    following.min_remaining = min(remaining, following.min_remaining)
                if field == "*":
                    capture_count += 1
                state = following
            finals.append(state)
        for state in finals:
            state.priority = self.states_count
        self.states_count += 1
        return capture_count

    def lookup(self, name: str, metric_type: str) -> tuple[Any, list[str]]:
        """The result of the glob ``name`` ends on for ``metric_type`` (None if none) and the captures
        (GetMapping, its depth-first search with a stack of ``*`` alternatives)."""
        fields = name.split(".")
        count = len(fields)
        current = self.root.transitions[metric_type]
        stack: list[tuple[_State, int, int, str]] = []
        resume = False
        final: _State | None = None
        captures = [""] * count
        final_captures = [""] * count
        capture_index = 0
        i = 0
        state = current
        while True:
            while True:
                if not resume:
                    if not current.transitions:
                        break
                    field = fields[i]
                    left = count - i - 1
                    literal = current.transitions.get(field)
                    star = current.transitions.get("*")
                    if literal is None or not literal.fits(left):
                        if star is None or not star.fits(left):
                            break
                        state = star
                        captures[capture_index] = field
                        capture_index += 1
                    else:
                        state = literal
                        if self.backtracking_needed and star is not None and star.fits(left):
                            stack.append((star, i, capture_index, field))
                if state.result is not None and i == count - 1:
                    if self.ordering_disabled:
                        return state.result, captures
                    if final is None or final.priority > state.priority:
                        final = state
                        final_captures = list(captures)
                    break
                i += 1
                if i >= count:
                    break
                resume = False
                current = state
            if not stack:
                break
            state, i, capture_index, field = stack.pop()
            current = state
            captures[capture_index] = field
            capture_index += 1
            resume = True
        return (final.result if final is not None else None), final_captures


def _prefix_regex(text: str) -> Any:
    return compile_regex("^" + text.replace(".", "\\.").replace("*", "\\*"), "glob", anchored=False)


def backtracking_needed(globs: list[str], ordering_disabled: bool) -> bool:
    """Whether :meth:`GlobFSM.lookup` must try ``*`` beside a literal component (TestIfNeedBacktracking):
    always with ordering on; otherwise only where a glob's ``*`` sits where another glob of the same
    length has a literal and neither contains the other."""
    by_length: dict[int, list[str]] = {}
    for glob in globs:
        by_length.setdefault(len(glob.split(".")), []).append(glob)
    needed = False
    for rules in by_length.values():
        if len(rules) == 1:
            continue
        whole = [
            compile_regex("^" + r.replace(".", "\\.").replace("*", "([^.]*)") + "$", "glob", anchored=False)
            for r in rules
        ]
        for i1, r1 in enumerate(rules):
            if "*" not in r1:
                continue
            this_needs = False
            for index, char in enumerate(r1):
                if char != "*":
                    continue
                prefix = _prefix_regex(r1[:index])
                if any(prefix.search(r2) for i2, r2 in enumerate(rules) if i2 != i1):
                    this_needs = True
            for i2, r2 in enumerate(rules):
                if i2 != i1 and whole[i1].search(r2):
                    if not ordering_disabled and i1 < i2:
                        log.warning("statsd_exporter mapping: match %r is a superset of the later %r, which will "
                                    "never be matched", r1, r2)
                    this_needs = False
            if any(whole[i2].search(r1) for i2 in range(len(rules)) if i2 != i1):
                this_needs = False
            if this_needs:
                log.warning("statsd_exporter mapping: match %r needs backtracking (slower)", r1)
                needed = True
    return not ordering_disabled or needed


#: A reference in a glob's template: ``$`` and a run of letters, digits, ``_`` and ``$`` (braced or not).
_REFERENCE = compile_regex(r"\$\{?([a-zA-Z0-9_\$]+)\}?", "glob template", anchored=False)


class TemplateFormatter:
    """A glob's ``name`` or label template (fsm.TemplateFormatter): ``$n``/``${n}`` is the n-th capture,
    ``$0`` the whole name; a reference that is no number, or past the glob's captures, is removed.
    The template becomes a Go format string, each reference ``%s``: :func:`_go_sprintf` fills it."""

    __slots__ = ("indexes", "text")

    def __init__(self, template: str, capture_count: int) -> None:
        self.indexes: list[int] = []
        text = template
        for ref in _REFERENCE.finditer(template):
            whole, number = ref.group(0), ref.group(1)
            if not number.isascii() or not number.isdigit() or int(number) > capture_count:
                text = text.replace(whole, "")
            else:
                text = text.replace(whole, "%s")
                self.indexes.append(int(number) - 1)
        self.text = text

    def format(self, name: str, captures: list[str]) -> str:
        if not self.indexes:
            return self.text
        return _go_sprintf(self.text, [name if i == -1 else captures[i] for i in self.indexes])


def _go_sprintf(text: str, args: list[str]) -> str:
    """Go's ``fmt.Sprintf`` of string arguments, for the verbs a template can hold: ``%s``/``%v`` take
    the next argument, ``%%`` is ``%``, any other verb prints Go's error text, as Go does (flags and
    widths, which a label value would need ``%`` and a digit for, are read as verbs)."""
    out: list[str] = []
    pending = iter(args)
    used = 0
    i = 0
    while i < len(text):
        char = text[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        if i + 1 == len(text):
            out.append("%!(NOVERB)")
            break
        verb = text[i + 1]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        arg = next(pending, None)
        if arg is None:
            out.append(f"%!{verb}(MISSING)")
            continue
        used += 1
        out.append(arg if verb in "sv" else f"%!{verb}(string={arg})")
    if used < len(args):
        out.append("%!(EXTRA " + ", ".join(f"string={a}" for a in args[used:]) + ")")
    return "".join(out)
