"""``pulse rules dry-run``: what rules would have done on recorded history.

History is replayed through the same engine code as the live flow, on a
simulated clock that follows the events, and nothing is sent: the report
counts per rule what would have fired, what which guard suppressed, what was
held out, and names sample customers for each. Decisions before ``since``
still happen (they set caps, frequency limits and journeys, as they would
have live) but only those from ``since`` on are reported.
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from engine.customer import Engine
from engine.decode import DeadLetter, decode_event
from engine.events import BaseEvent
from engine.loyalty import LoyaltyProgram
from engine.rules.ruleset import RuleSet
from engine.rules.simulate import Simulation
from engine.triggers import Decision
from pulse.replay import source
from pulse.settings import Settings


@dataclass
class RuleReport:
    rule_id: str
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # "suppressed:no_consent" ...
    samples: dict[str, list[str]] = field(default_factory=dict)  # outcome -> customers

    @property
    def would_fire(self) -> int:
        return self.outcomes["fired"]

    def conversion_rate(self, group: str) -> float | None:
        """Conversions per send (treated) or per hold-out."""
        base = self.outcomes["fired" if group == "treated" else "held_out"]
        return self.reasons[f"converted:{group}"] / base if base else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "outcomes": dict(self.outcomes),
            "reasons": dict(self.reasons),
            "samples": self.samples,
            "conversion_treated": self.conversion_rate("treated"),
            "conversion_holdout": self.conversion_rate("holdout"),
        }


@dataclass
class DryRunReport:
    version: str
    events: int = 0
    skipped: int = 0  # records that are not valid events
    customers: int = 0
    first_event: float | None = None
    last_event: float | None = None
    seconds: float = 0.0
    rules: dict[str, RuleReport] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "events": self.events,
            "skipped": self.skipped,
            "customers": self.customers,
            "first_event": self.first_event,
            "last_event": self.last_event,
            "seconds": self.seconds,
            "rules": {k: v.as_dict() for k, v in self.rules.items()},
        }


def dry_run(
    rules: RuleSet,
    events: Iterable[BaseEvent | DeadLetter],
    *,
    loyalty: LoyaltyProgram,
    only: Iterable[str] = (),
    since: float | None = None,
    until: float | None = None,
    samples: int = 5,
    progress: Callable[[int], None] | None = None,
) -> DryRunReport:
    """Replay ``events`` through the rules; nothing is sent anywhere."""
    started = time.monotonic()
    wanted = set(only) or set(rules.by_id)
    report = DryRunReport(
        rules.version, rules={r: RuleReport(r) for r in sorted(wanted & set(rules.by_id))}
    )
    simulation = Simulation(Engine(rules, loyalty=loyalty))
    low = float("-inf") if since is None else since

    def record(effects: Iterable[object]) -> None:
        for d in effects:
            if isinstance(d, Decision) and d.rule_id in wanted and d.at >= low:
                _count(report.rules[d.rule_id], d, samples)

    for item in events:
        if isinstance(item, DeadLetter):
            report.skipped += 1
            continue
        ts = item.ts
        if until is not None and ts > until:
            break
        report.events += 1
        report.first_event = ts if report.first_event is None else min(report.first_event, ts)
        report.last_event = ts if report.last_event is None else max(report.last_event, ts)
        record(simulation.feed(item))
        if progress is not None and report.events % 1000 == 0:
            progress(report.events)
    if until is not None:
        record(simulation.advance(until))
    elif report.last_event is not None:
        record(simulation.advance(report.last_event))
    if progress is not None:
        progress(report.events)
    report.customers = len(simulation.customers)
    report.seconds = time.monotonic() - started
    return report


def _count(rule: RuleReport, d: Decision, samples: int) -> None:
    rule.outcomes[d.outcome] += 1
    if d.reason and d.outcome != "error":
        reason = d.reason.split(":", 1)[0] if d.outcome == "exited" else d.reason
        rule.reasons[f"{d.outcome}:{reason}"] += 1
    chosen = rule.samples.setdefault(d.outcome, [])
    if len(chosen) < samples and d.customer_id not in chosen:
        chosen.append(d.customer_id)


# Sources ------------------------------------------------------------------------------


def file_events(
    path: Path, fmt: str = "auto", mapping: Path | None = None, preset: str | None = None
) -> Iterator[BaseEvent | DeadLetter]:
    """Events from a file in any format ``pulse replay`` reads."""
    for raw in source(path, fmt, mapping, preset):
        yield decode_event(raw, 0.0)


def topic_events(settings: Settings, timeout_s: float = 10.0) -> Iterator[BaseEvent | DeadLetter]:
    """The events topic as it stands, merged across partitions in event-time order.

    Each partition is in order by itself; a k-way merge keeps the simulated
    clock moving forward without holding the topic in memory.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"pulse-dry-run-{uuid.uuid4().hex}",
            "enable.auto.commit": "false",
        }
    )
    topic = settings.events_topic
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        partitions = sorted(metadata.partitions) if metadata is not None else []
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
    finally:
        consumer.close()
    streams = [_partition_events(settings, topic, p, end, timeout_s) for p, end in ends.items()]
    yield from heapq.merge(*streams, key=lambda e: e.ts if isinstance(e, BaseEvent) else 0.0)


def _partition_events(
    settings: Settings, topic: str, partition: int, end: int, timeout_s: float
) -> Iterator[BaseEvent | DeadLetter]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"pulse-dry-run-{uuid.uuid4().hex}",
            "enable.auto.commit": "false",
        }
    )
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    position = -1
    idle_since = time.monotonic()
    try:
        while position + 1 < end:
            msgs = consumer.consume(1000, 0.5)
            if not msgs:
                if time.monotonic() - idle_since > timeout_s:
                    raise TimeoutError(f"{topic}[{partition}] stopped at offset {position}")
                continue
            idle_since = time.monotonic()
            for msg in msgs:
                offset = msg.offset()
                if msg.error() is not None or offset is None:
                    continue
                position = offset
                if position >= end:
                    break
                yield decode_event(msg.value(), 0.0)
    finally:
        consumer.close()
