"""DogStatsD's events and service checks, read into records (the lines that are not metrics).

``_e{<title length>,<text length>}:<title>|<text>[|d:<unix seconds>][|h:<host>][|k:<aggregation key>]
[|p:normal|low][|s:<source type>][|t:info|warning|error|success][|#tags][|c:<container id>]``: the
lengths count the UTF-8 bytes of the title and the text as written (``\\n`` stands for a newline).

``_sc|<name>|<status 0 ok, 1 warning, 2 critical, 3 unknown>[|d:<unix seconds>][|h:<host>][|#tags]
[|c:<container id>][|m:<message>]``: the message, last, is the rest of the line (bars included).

A record is a JSON-ready map that starts as an aggregate does (``name``, ``type`` ``event`` or
``service_check``, ``tags`` with the agent's default tags merged in, ``timestamp``: the ``d:``
field, or None when the line has none), then the kind's own keys. A line that is not a well-formed
record raises :class:`~.base.ParseError` under ``bad_event`` or ``bad_service_check`` (or the shared
tag and timestamp reasons); fields this daemon has no use for are ignored, as on a metric line.
"""

from __future__ import annotations

from typing import Any

from stages.common.model import tag_tuple, tags_dict
from stages.receiver.parsers.base import (
    MAX_NAME_CHARS,
    ParseError,
    container_id,
    dogstatsd_stamp,
    dogstatsd_tags,
)

EVENT_START = "_e{"
SERVICE_CHECK_START = "_sc|"
PRIORITIES = frozenset({"normal", "low"})
ALERT_TYPES = frozenset({"info", "warning", "error", "success"})
STATUSES = ("ok", "warning", "critical", "unknown")
#: The longest title and text an event may declare (DogStatsD's own datagrams are 8 KiB at most).
MAX_EVENT_BYTES = 65_536


def is_record(line: str) -> bool:
    """Whether ``line`` is an event or a service check by its start (whatever follows)."""
    return line.startswith(EVENT_START) or line.startswith(SERVICE_CHECK_START)


def record(line: str, defaults: dict[str, str], keep_container_id: bool) -> dict[str, Any]:
    """The record of an event or service check line (:func:`is_record`); ParseError when malformed."""
    if line.startswith(EVENT_START):
        return event(line, defaults, keep_container_id)
    return service_check(line, defaults, keep_container_id)


def event(line: str, defaults: dict[str, str], keep_container_id: bool) -> dict[str, Any]:
    raw = line.encode("utf-8", "surrogatepass")
    close = raw.find(b"}:", len(EVENT_START))
    title_len, comma, text_len = raw[len(EVENT_START):close].partition(b",")
    if close < 0 or not comma or not _digits(title_len) or not _digits(text_len):
        raise ParseError("bad_event")
    title_end = close + 2 + int(title_len)
    text_end = title_end + 1 + int(text_len)
    if (int(title_len) == 0 or int(title_len) + int(text_len) > MAX_EVENT_BYTES or len(raw) < text_end
            or raw[title_end:title_end + 1] != b"|" or raw[text_end:text_end + 1] not in (b"", b"|")):
        raise ParseError("bad_event")
    try:
        title = raw[close + 2:title_end].decode("utf-8")
        text = raw[title_end + 1:text_end].decode("utf-8")
        rest = raw[text_end + 1:].decode("utf-8")
    except UnicodeDecodeError:  # a length that cuts a character in two
        raise ParseError("bad_event") from None
    fields: dict[str, Any] = {"hostname": "", "aggregation_key": "", "priority": "normal", "source_type_name": "",
                              "alert_type": "info"}
    tags: dict[str, str] = {}
    stamp = None
    for field in rest.split("|") if rest else ():
        if field.startswith("d:"):
            stamp = dogstatsd_stamp(field[2:])
        elif field.startswith("h:"):
            fields["hostname"] = field[2:]
        elif field.startswith("k:"):
            fields["aggregation_key"] = field[2:]
        elif field.startswith("p:"):
            fields["priority"] = _one_of(field[2:], PRIORITIES, "bad_event")
        elif field.startswith("s:"):
            fields["source_type_name"] = field[2:]
        elif field.startswith("t:"):
            fields["alert_type"] = _one_of(field[2:], ALERT_TYPES, "bad_event")
        else:
            _tags_field(field, tags, keep_container_id)
    return {"name": _unescaped(title), "type": "event", "tags": tags_dict(tag_tuple(tags, defaults)),
            "timestamp": stamp, "text": _unescaped(text), **fields}


def service_check(line: str, defaults: dict[str, str], keep_container_id: bool) -> dict[str, Any]:
    name, bar, rest = line[len(SERVICE_CHECK_START):].partition("|")
    status, _, rest = rest.partition("|")
    if not name or not bar or len(name) > MAX_NAME_CHARS or status not in ("0", "1", "2", "3"):
        raise ParseError("bad_service_check")
    hostname = message = ""
    tags: dict[str, str] = {}
    stamp = None
    while rest:
        if rest.startswith("m:"):
            message = rest[2:]  # the last field: the rest of the line, bars and all
            break
        field, _, rest = rest.partition("|")
        if field.startswith("d:"):
            stamp = dogstatsd_stamp(field[2:])
        elif field.startswith("h:"):
            hostname = field[2:]
        else:
            _tags_field(field, tags, keep_container_id)
    return {"name": name, "type": "service_check", "tags": tags_dict(tag_tuple(tags, defaults)),
            "timestamp": stamp, "status": int(status), "status_name": STATUSES[int(status)], "hostname": hostname,
            "message": _unescaped(message)}


def _tags_field(field: str, tags: dict[str, str], keep_container_id: bool) -> None:
    """``#k:v,...`` tags, or a kept ``c:`` container id; any other field is ignored."""
    if field.startswith("#"):
        dogstatsd_tags(field[1:], tags)
    elif keep_container_id and field.startswith("c:"):
        container_id(field, tags)


def _digits(text: bytes) -> bool:
    return 0 < len(text) <= 6 and text.isdigit()


def _one_of(value: str, allowed: frozenset[str], reason: str) -> str:
    if value not in allowed:
        raise ParseError(reason)
    return value


def _unescaped(text: str) -> str:
    """DogStatsD clients write a newline of a title, text or message as ``\\n``."""
    return text.replace("\\n", "\n")
