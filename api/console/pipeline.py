"""What the overview shows: read from what the processes already publish.

The same sources as ``pulse status`` (pulse/status.py): the dataflow's input
positions and worker counters in Redis, the topics' watermarks and the
dispatcher group's committed offsets in Kafka, each rule's decision counts in
Redis (those of the live rule set's rules, read by name: see
``rule_counts``). Deliveries by channel and outcome come from the dispatcher's own
Prometheus endpoint (``dispatch_metrics_port``), the dead letters from the two
dead-letter topics (the newest records' ``pulse.reason`` header).

These are blocking client calls: the console runs them in a worker thread,
keeps one Kafka consumer for them instead of one per look, and shares one
reading between every page that asks within a second.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from api.console.kafka_clients import close_when_free
from pulse.keys import RedisKeys
from pulse.settings import Settings
from pulse.status import (
    PartitionLag,
    loaded_rules,
    positions,
    rule_counts,
    watermarks,
    worker_counters,
)

NEWEST_REASONS = 5
# A page waits this long for Kafka at most per call, not status.py's 5 s.
KAFKA_TIMEOUT_S = 2.0


@dataclass
class DeadLetters:
    topic: str
    records: int = 0
    newest: list[str] = field(default_factory=list)  # newest first


@dataclass
class Reading:
    """One look at the pipeline, with the rates since the look before."""

    at: float
    events_in: int = 0  # records on the events topic, all partitions
    processed: int = 0  # events the dataflow's workers handled
    triggers: int = 0  # records on the triggers topic
    workers: int = 0
    dataflow: list[PartitionLag] = field(default_factory=list)
    dispatcher: list[PartitionLag] = field(default_factory=list)
    rules: dict[str, Any] | None = None
    rule_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    deliveries: dict[tuple[str, str], float] | None = None  # (channel, outcome) -> count
    rule_deliveries: dict[str, dict[str, float]] = field(default_factory=dict)  # rule -> outcome
    deliveries_note: str = ""
    dead_letters: list[DeadLetters] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)  # per second, since the last look

    def sample(self) -> dict[str, Any]:
        """What history keeps of it (api/console/history.py)."""
        return {
            "t": round(self.at, 3),
            "in": self.events_in,
            "processed": self.processed,
            "triggers": self.triggers,
            "rules": self.rule_stats,
        }


class PipelineReader:
    """Blocking reads of the pipeline's state; thread-safe, cached for ``max_age_s``."""

    def __init__(
        self,
        settings: Settings,
        rule_ids: Callable[[], Iterable[str]],
        max_age_s: float = 1.0,
    ) -> None:
        self._settings = settings
        self._rule_ids = rule_ids
        self._keys = RedisKeys(settings.redis_prefix)
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._redis: redis.Redis = redis.Redis.from_url(settings.redis, socket_timeout=2)
        self._plain: Consumer | None = None
        self._dispatch_group: Consumer | None = None
        self._last: Reading | None = None
        self._dlq_cache: dict[str, tuple[int, list[str]]] = {}

    def read(self) -> Reading:
        with self._lock:
            if self._last is not None and time.time() - self._last.at < self._max_age_s:
                return self._last
            reading = self._read()
            if self._last is not None:
                reading.rates = _rates(self._last, reading)
            self._last = reading
            return reading

    def close(self, wait_s: float = 0.5) -> None:
        """Close the clients, unless a reading still holds them (kafka_clients.py)."""
        close_when_free(self._lock, self._close, wait_s)

    def _close(self) -> None:
        for consumer in (self._plain, self._dispatch_group):
            if consumer is not None:
                consumer.close()
        self._plain = self._dispatch_group = None
        self._redis.close()

    # -- the sources -----------------------------------------------------------------

    def _read(self) -> Reading:
        s = self._settings
        reading = Reading(at=time.time())
        read: dict[str, int] = {}
        try:
            read = positions(self._redis, self._keys)
            counters = worker_counters(self._redis, self._keys)
            reading.workers = len(counters)
            reading.processed = int(sum(w["processed"] for w in counters.values()))
            reading.rules = loaded_rules(self._redis, self._keys)
            reading.rule_stats = rule_counts(self._redis, self._keys, self._rule_ids())
        except redis.RedisError as exc:
            reading.errors.append(f"redis: {exc}")
        try:
            plain, group = self._consumers()
            wait = KAFKA_TIMEOUT_S
            reading.dataflow = watermarks(plain, s.events_topic, committed=False, timeout_s=wait)
            for row in reading.dataflow:
                row.position = read.get(f"{row.topic}:{row.partition}")
            reading.events_in = sum(r.high_watermark for r in reading.dataflow)
            reading.dispatcher = watermarks(group, s.triggers_topic, committed=True, timeout_s=wait)
            reading.triggers = sum(r.high_watermark for r in reading.dispatcher)
            reading.dead_letters = [
                self._dead_letters(plain, s.events_dlq_topic),
                self._dead_letters(plain, s.triggers_dlq_topic),
            ]
        except KafkaException as exc:
            reading.errors.append(f"kafka: {exc}")
        reading.deliveries, reading.rule_deliveries, reading.deliveries_note = self._deliveries()
        return reading

    def _consumers(self) -> tuple[Consumer, Consumer]:
        s = self._settings
        if self._plain is None:
            self._plain = Consumer(_config(s, f"pulse-console-{uuid.uuid4().hex}"))
        if self._dispatch_group is None:
            # The dispatcher's group id, to read its committed offsets; never
            # subscribes or commits, so it does not join the group.
            self._dispatch_group = Consumer(_config(s, f"{s.consumer_group_prefix}.dispatch"))
        return self._plain, self._dispatch_group

    def _dead_letters(self, consumer: Consumer, topic: str) -> DeadLetters:
        """The topic's size, and the reasons of its newest records (read only
        when the size changed since the last look)."""
        metadata = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return DeadLetters(topic)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), KAFKA_TIMEOUT_S)
            for p in metadata.partitions
        }
        records = sum(high - low for low, high in ends.values())
        cached = self._dlq_cache.get(topic)
        if cached is not None and cached[0] == records:
            return DeadLetters(topic, records, cached[1])
        newest = newest_reasons(consumer, topic, ends) if records else []
        self._dlq_cache[topic] = (records, newest)
        return DeadLetters(topic, records, newest)

    def _deliveries(
        self,
    ) -> tuple[dict[tuple[str, str], float] | None, dict[str, dict[str, float]], str]:
        """By channel and outcome, and by rule, from the dispatcher's metrics."""
        port = self._settings.dispatch_metrics_port
        if not port:
            note = "the dispatcher exports them on dispatch_metrics_port, which is 0 (off)"
            return None, {}, note
        url = f"http://{self._settings.api_host}:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                text = response.read().decode()
        except OSError as exc:
            return None, {}, f"the dispatcher's metrics at {url} did not answer ({exc})"
        counts: dict[tuple[str, str], float] = {}
        by_rule: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                if family.name == "pulse_dispatch_deliveries":
                    key = (sample.labels["channel"], sample.labels["outcome"])
                    counts[key] = counts.get(key, 0.0) + sample.value
                elif family.name == "pulse_dispatch_rule_deliveries":
                    outcomes = by_rule.setdefault(sample.labels["rule"], {})
                    outcome = sample.labels["outcome"]
                    outcomes[outcome] = outcomes.get(outcome, 0.0) + sample.value
        return counts, by_rule, f"from {url}, since the dispatcher started"


def _config(settings: Settings, group: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka,
        "group.id": group,
        "enable.auto.commit": "false",
        # Read the tail of a topic without waiting for more to arrive.
        "fetch.wait.max.ms": 10,
    }


def newest_reasons(
    consumer: Consumer, topic: str, ends: dict[int, tuple[int, int]], timeout_s: float = 1.0
) -> list[str]:
    """The ``pulse.reason`` header of the newest few records, newest first."""
    wanted = {p: max(low, high - NEWEST_REASONS) for p, (low, high) in ends.items() if high > low}
    found: list[tuple[int, str]] = []  # (timestamp ms, reason)
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in wanted.items()])
    try:
        remaining = {p: ends[p][1] - offset for p, offset in wanted.items()}
        deadline = time.monotonic() + timeout_s
        while any(n > 0 for n in remaining.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.05):
                partition = msg.partition()
                if msg.error() is not None or partition is None:
                    continue
                remaining[partition] = remaining.get(partition, 1) - 1
                headers = dict(msg.headers() or [])
                reason = headers.get("pulse.reason") or b"?"
                text = reason.decode(errors="replace") if isinstance(reason, bytes) else "?"
                found.append((msg.timestamp()[1], text))
    finally:
        consumer.unassign()
    found.sort(reverse=True)
    return [reason for _, reason in found[:NEWEST_REASONS]]


def _rates(before: Reading, after: Reading) -> dict[str, float]:
    elapsed = after.at - before.at
    if elapsed <= 0:
        return {}
    return {
        name: max(0, getattr(after, name) - getattr(before, name)) / elapsed
        for name in ("events_in", "processed", "triggers")
    }
