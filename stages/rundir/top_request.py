"""That a ``pystatsd top`` is running, and the tag keys it groups by: the shards sum their busiest names
(and a tag's values) only while one asks.

Summing every series by name costs a few milliseconds per 10,000 series at each flush, by a tag's values
more (a split of every series key), so a shard does it only while a top asks: ``<run>/top-request.json``
names the tag keys and the moment the request lapses (top renews it every refresh; a top that was
stopped asks nothing a few intervals later). A shard reads it once per flush.
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.rundir.private_file import read_private, write_private

REQUEST_FILE = "top-request.json"
#: Tag keys one request may name.
MAX_TAG_KEYS = 4


def ask(run_dir: Path, tag_keys: list[str], until: float) -> None:
    """Have the shards group by ``tag_keys`` until ``until`` (unix time)."""
    write_private(run_dir / REQUEST_FILE, json.dumps({"tag_keys": tag_keys[:MAX_TAG_KEYS], "until": until}).encode())


def asked_tag_keys(run_dir: Path, now: float) -> list[str] | None:
    """The tag keys a top asks for now (maybe none); None when no top asks: no request, a lapsed one or one
    that cannot be read."""
    try:
        request = json.loads(read_private(run_dir / REQUEST_FILE))
        keys, until = request["tag_keys"], float(request["until"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if now > until or not isinstance(keys, list):
        return None
    return [key for key in keys[:MAX_TAG_KEYS] if isinstance(key, str)]
