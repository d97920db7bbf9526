"""A statsd_exporter mapping file's YAML read as its Go decoder (yaml.v2's UnmarshalStrict) reads it.

The file is composed into YAML nodes, never into Python values, so each scalar is typed as Go types
it: any scalar fills a string field with its text as written (``code: 200`` is the label value
``"200"``, ``null`` is ``""``), a bool is YAML 1.1's (``yes``, ``on``, ``y``...), a number may be
written ``1e3``, a duration as Go's ``time.ParseDuration`` reads it (or an integer of nanoseconds).
A key the struct does not have, or a key given twice, is refused, as UnmarshalStrict refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import yaml

from .kind import RulesError
from .regex import compile_regex

#: yaml.v2's YAML 1.1 booleans.
_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_FALSE = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_NULL = {"", "~", "null", "Null", "NULL"}
#: yaml.v2's plain float (it also reads the ints of strconv.ParseInt and ``.inf``/``.nan``).
_FLOAT = compile_regex(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$", "yaml float", anchored=False)
_SPECIAL_FLOATS = {".inf": math.inf, ".Inf": math.inf, ".INF": math.inf, "+.inf": math.inf, "+.Inf": math.inf,
                   "+.INF": math.inf, "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
                   ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan}
#: Go's duration units in seconds.
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def compose(text: str, key: str) -> Any:
    """The file's root node (None for an empty file); a YAML error is refused naming ``key``."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise RulesError(key, f"not valid YAML: {exc}") from None


def is_null(node: Any) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.style is None and node.value in _NULL


def _plain(node: Any, key: str, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise RulesError(key, f"expected {what}, not a {_kind(node)}")
    if node.style is not None:
        raise RulesError(key, f"expected {what}, not the quoted string {node.value!r}")
    return str(node.value)


def _kind(node: Any) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    return "list" if isinstance(node, yaml.SequenceNode) else "scalar"


def fields(node: Any, key: str, known: set[str]) -> Iterator[tuple[str, Any]]:
    """Each ``(field, value node)`` of the mapping ``node``, in document order, refusing an unknown or
    repeated field by name; a merge (``<<: *base``) gives its mapping's fields where it stands (they
    count as given in that mapping only, as yaml.v2 has it)."""
    if node is None or is_null(node):
        return
    if not isinstance(node, yaml.MappingNode):
        raise RulesError(key or "top level", f"expected a mapping, not a {_kind(node)}")
    seen: set[str] = set()
    for key_node, value in node.value:
        if _is_merge(key_node):
            for merged in _merged(value, key):
                yield from fields(merged, key, known)
            continue
        name = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
        where = f"{key}.{name}" if key else name
        if name not in known:
            raise RulesError(where, "unknown key (statsd_exporter 0.31 refuses it too)")
        if name in seen:
            raise RulesError(where, "given twice (statsd_exporter 0.31 refuses it too)")
        seen.add(name)
        yield name, value


def _is_merge(node: Any) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:merge"


def _merged(node: Any, key: str) -> list[Any]:
    """The mappings a merge key's value brings, in the order yaml.v2 applies them (a list backwards:
    its first mapping takes precedence)."""
    nodes = list(reversed(node.value)) if isinstance(node, yaml.SequenceNode) else [node]
    if not all(isinstance(each, yaml.MappingNode) for each in nodes):
        raise RulesError(f"{key}.<<", "a merge takes a mapping or a list of mappings")
    return nodes


def items(node: Any, key: str) -> list[Any]:
    """The nodes of the list ``node`` (none for null)."""
    if is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise RulesError(key, f"expected a list, not a {_kind(node)}")
    return list(node.value)


def string(node: Any, key: str) -> str:
    """A string field: any scalar's text as written, ``""`` for null."""
    if not isinstance(node, yaml.ScalarNode):
        raise RulesError(key, f"expected a string, not a {_kind(node)}")
    return "" if is_null(node) else str(node.value)


def string_map(node: Any, key: str, out: dict[str, str] | None = None) -> dict[str, str]:
    """A ``map[string]string`` field (labels); a key given twice, by a merge too, is refused as yaml.v2's
    strict mode refuses it."""
    out = {} if out is None else out
    if is_null(node):
        return out
    if not isinstance(node, yaml.MappingNode):
        raise RulesError(key, f"expected a mapping, not a {_kind(node)}")
    for key_node, value in node.value:
        if _is_merge(key_node):
            for merged in _merged(value, key):
                string_map(merged, key, out)
            continue
        name = string(key_node, key)
        if name in out:
            raise RulesError(f"{key}.{name}", "given twice (statsd_exporter 0.31 refuses it too)")
        out[name] = string(value, f"{key}.{name}")
    return out


def boolean(node: Any, key: str) -> bool:
    if is_null(node):
        return False
    text = _plain(node, key, "true or false")
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise RulesError(key, f"expected true or false, not {text!r}")


def integer(node: Any, key: str, low: int = -(1 << 63), high: int = (1 << 63) - 1) -> int:
    if is_null(node):
        return 0
    text = _plain(node, key, "an integer")
    try:
        value = int(text, 0)
    except ValueError:
        raise RulesError(key, f"expected an integer, not {text!r}") from None
    if not low <= value <= high:
        raise RulesError(key, f"{value} is out of range [{low}, {high}]")
    return value


def number(node: Any, key: str) -> float:
    if is_null(node):
        return 0.0
    text = _plain(node, key, "a number")
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text]
    try:
        return float(int(text, 0))
    except ValueError:
        pass
    if _FLOAT.search(text):
        return float(text)
    raise RulesError(key, f"expected a number, not {text!r}")


def numbers(node: Any, key: str) -> list[float]:
    return [number(item, f"{key}[{i}]") for i, item in enumerate(items(node, key))]


def duration(node: Any, key: str) -> float:
    """A ``time.Duration`` field in seconds: Go's duration text (``90s``, ``1h30m``) or integer nanoseconds."""
    if is_null(node):
        return 0.0
    if not isinstance(node, yaml.ScalarNode):
        raise RulesError(key, f"expected a duration, not a {_kind(node)}")
    text = str(node.value)
    if node.style is None:
        try:
            return int(text, 0) * 1e-9
        except ValueError:
            pass
    seconds = go_duration(text)
    if seconds is None:
        raise RulesError(key, f"{text!r} is not a duration (Go's: 30s, 5m, 1h30m, 250ms)")
    return seconds


def go_duration(text: str) -> float | None:
    """``time.ParseDuration``'s value of ``text`` in seconds, None where Go refuses it."""
    rest, sign = text, 1.0
    if rest[:1] in ("-", "+"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        return None
    total = 0.0
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789."))
        amount, rest = rest[:digits], rest[digits:]
        if not amount or amount == "." or amount.count(".") > 1:
            return None
        unit_length = len(rest) - len(rest.lstrip("nuµμmsh"))
        unit, rest = rest[:unit_length], rest[unit_length:]
        if unit not in _UNITS:
            return None
        total += float(amount) * _UNITS[unit]
    return sign * total


def choice(node: Any, key: str, reads: Callable[[str], str | None]) -> str:
    """An enumerated field (match_type, action, ...): ``reads`` gives its value or None to refuse it; null
    leaves it unset (``""``), as yaml.v2 calls no UnmarshalYAML for null."""
    if is_null(node):
        return ""
    text = string(node, key)
    value = reads(text)
    if value is None:
        raise RulesError(key, f"{text!r} is not one of its values")
    return value
