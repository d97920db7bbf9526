"""The name of each stage's process: supervisord's, and the key of its log lines, figures and files.

``forwarder``; ``aggregator-K`` for shard K; ``receiver`` for the first receiver and ``receiver-N``
for extra receiver N (a receiver is told its name, ``--name``). supervisord.conf spells the same
names with its own expansions (``process_name=aggregator-%(process_num)d``); a test checks that they
agree.
"""

from __future__ import annotations

RECEIVER = "receiver"
AGGREGATOR = "aggregator"
FORWARDER = "forwarder"


def process_name(stage: str, number: int | None = None) -> str:
    """The process of ``stage`` (one of the three above) numbered ``number``, or its only or first one."""
    return stage if number is None else f"{stage}-{number}"


def is_process_of(name: str, stage: str) -> bool:
    """Whether the process called ``name`` is one of ``stage``'s."""
    return name == stage or name.startswith(f"{stage}-")
