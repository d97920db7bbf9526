"""The receiver's tap points, ``received`` and ``mapped`` (see :mod:`stages.common.tap`).

The compiled window parses in C and keeps no parsed metric to show, and re-parsing costs only while
a tap listens: so, with a tap listening, the receiver hands each burst of payloads here as well, and
the first of them (at most :data:`PAYLOADS_PER_SECOND` a second, and only until every tap had its
``rate``) are parsed again with the receiver's own Python parser (:mod:`.parsers`: the same
samples, the C window is held to it) into throwaway lists. ``received`` shows those samples;
``mapped`` puts each to the receiver's own :class:`~.rules.rule_set.RuleSet`, as the window asks it
(a gauge change as a gauge), and shows the identity it is aggregated under, the rule that decided
and the tally it is counted under. With no tap listening this costs one non-blocking look at the
tap socket per burst.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from stages.common.model import OUTPUT_TYPE_NAMES, MetricType, Sample, Tags, tags_dict
from stages.common.tap import MAPPED, RECEIVED, Listening, listening_to, open_tap_point
from stages.receiver.identity import DROP
from stages.receiver.parsers import payload_parser
from stages.receiver.parsers.base import LineOptions
from stages.receiver.rules.rule_set import DROPPED, RuleSet
from stages.receiver.rules.rule_set import MAPPED as MAPPED_OUTCOME

#: Payloads parsed again for the taps, at most, each second: bounds what a tap costs under load.
PAYLOADS_PER_SECOND = 500


class ReceiverTap:
    """Shows the receiver's parsed (and mapped) metrics to the taps listening; nothing when none does."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: Path, process: str,
                 defaults: dict[str, str], options: LineOptions, rules: RuleSet | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.point = open_tap_point(ctx, run_dir, process, clock)
        # Events and service checks are the forwarder's business: not kept here (records=None).
        self.parse = payload_parser(defaults, LineOptions(options.open_interval, options.keep_container_id))
        self.rules = rules
        self.second = 0
        self.parsed = 0

    def look(self) -> None:
        """Take in the taps' subscriptions (each one acknowledged) while no burst comes: an idle receiver wakes
        at least every IDLE_WAKE_SECS, so a new tap hears within that that it is listened to."""
        listening_to(self.point)

    def show(self, payloads: list[bytes]) -> None:
        """A burst of payloads the window took: sampled to the taps listening, if any."""
        listening = listening_to(self.point)
        if not listening or self.point is None:
            return
        second = int(self.clock())
        if second != self.second:
            self.second, self.parsed = second, 0
        for payload in payloads:
            if self.parsed >= PAYLOADS_PER_SECOND or not any(self.point.allowance(tap) for tap in listening):
                return
            self.parsed += 1
            samples: list[Sample] = []
            self.parse(payload, samples, {})  # its bad lines are the window's to count, not the tap's
            for sample in samples:
                for tap in listening:
                    if self.point.allowance(tap):
                        shown = self.shown(tap, sample)
                        if shown is not None:
                            self.point.publish(tap, shown)

    def shown(self, tap: Listening, sample: Sample) -> dict[str, Any] | None:
        """What ``tap`` is shown of ``sample``; None when its filters leave it out."""
        name, mtype, value, rate, tags = sample
        spec = tap.spec
        if spec.where == RECEIVED:
            if not spec.wants(name, tags):
                return None
            return _metric(RECEIVED, name, mtype, value, rate, tags)
        filed_type = int(MetricType.GAUGE) if mtype == MetricType.GAUGE_DELTA else mtype
        new_name, new_tags, rule, outcome, scale = name, tags, None, "unmatched", None
        if self.rules is not None:
            verdict = self.rules.verdict(name, filed_type, tags)
            decision, rule, scale = verdict.decision, verdict.rule, verdict.scale
            if decision is DROP:
                outcome = DROPPED
            elif rule is not None:
                outcome = MAPPED_OUTCOME
                if decision is not None:
                    new_name, new_tags = decision
        if not (spec.wants(new_name, new_tags) or spec.wants(name, tags)):
            return None
        shown = _metric(MAPPED, new_name, mtype, value, rate, new_tags)
        shown.update({"received_name": name, "received_tags": tags_dict(tags), "rule": rule, "outcome": outcome,
                      "tally": f"rule_{outcome}", "scale": scale})
        return shown

    def close(self) -> None:
        if self.point is not None:
            self.point.close()


def _metric(where: str, name: str, mtype: int, value: float | str, rate: float, tags: Tags) -> dict[str, Any]:
    kind = "gauge_change" if mtype == MetricType.GAUGE_DELTA else OUTPUT_TYPE_NAMES.get(mtype, str(mtype))
    return {"where": where, "name": name, "type": kind, "value": value, "sample_rate": rate,
            "tags": tags_dict(tuple(tags))}
