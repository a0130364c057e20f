"""``pulse dispatch retry-dlq``: send dead-lettered triggers through again.

A trigger lands on ``<prefix>.triggers.dlq`` when its channel refused it for
good, retries ran out, or no channel was configured for it. Once the cause is
fixed (the endpoint is back, the channel configured), the operator re-drives
them: each matching record's delivery claim is cleared and its original bytes
go back onto the triggers topic, where a dispatcher delivers it like any
other, with the same trigger id as idempotency key. Progress is a consumer
group of its own, committed by a run without filters after the records are
safely on the triggers topic: a second run re-drives only what was
dead-lettered since, and a run that dies midway repeats at most its last
batch (which the delivery claims then deduplicate).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from engine.triggers import Trigger
from pulse.keys import RedisKeys
from pulse.settings import Settings

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(Trigger).decode


@dataclass
class RedriveReport:
    read: int = 0
    redriven: int = 0
    skipped: int = 0  # not matching --rule / --channel
    undecodable: int = 0  # not a trigger at all: stays dead
    reasons: dict[str, int] = field(default_factory=dict)


def redrive(
    settings: Settings,
    *,
    rule: str | None = None,
    channel: str | None = None,
    dry_run: bool = False,
    progress: Callable[[RedriveReport], None] | None = None,
) -> RedriveReport:
    """Re-drive the dead letters present when it starts; returns what it did."""
    group = f"{settings.consumer_group_prefix}.dispatch.redrive"
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": group,
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {"bootstrap.servers": settings.kafka, "enable.idempotence": "true", "acks": "all"}
    )
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    keys = RedisKeys(settings.redis_prefix)
    report = RedriveReport()
    # Progress is kept only by a full run: one filtered by rule or channel
    # leaves the others for a later run (re-driving a delivered trigger again
    # is harmless: its claim says sent and the dispatcher skips it).
    commit = not dry_run and rule is None and channel is None
    try:
        topic = settings.triggers_dlq_topic
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        parts = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        committed = consumer.committed(parts, timeout=10)
        ends: dict[int, int] = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            start = tp.offset if tp.offset >= 0 else low
            if start < high:
                ends[tp.partition] = high
                tp.offset = start
        todo = [tp for tp in committed if tp.partition in ends]
        if not todo:
            return report
        consumer.assign(todo)
        positions: dict[int, int] = {}
        while ends:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None:
                    continue
                partition, offset = msg.partition(), msg.offset()
                if partition is None or offset is None:
                    continue
                if partition not in ends or offset >= ends[partition]:
                    continue
                positions[partition] = offset + 1
                if offset + 1 >= ends[partition]:
                    del ends[partition]
                _one(
                    msg.value() or b"",
                    _headers(msg.headers()),
                    report,
                    rule,
                    channel,
                    dry_run,
                    settings,
                    producer,
                    client,
                    keys,
                )
            if progress is not None:
                progress(report)
            if commit and positions:
                producer.flush(30)
                consumer.commit(
                    offsets=[TopicPartition(topic, p, o) for p, o in positions.items()],
                    asynchronous=False,
                )
        return report
    finally:
        producer.flush(30)
        consumer.close()
        client.close()


def _headers(raw: object) -> list[tuple[str, bytes | str | None]]:
    """Record headers as pairs (the client types them as a list or a dict)."""
    if isinstance(raw, dict):
        return list(raw.items())
    return list(raw) if isinstance(raw, list) else []


def _one(
    raw: bytes,
    headers: list[tuple[str, bytes | str | None]],
    report: RedriveReport,
    rule: str | None,
    channel: str | None,
    dry_run: bool,
    settings: Settings,
    producer: Producer,
    client: redis.Redis,
    keys: RedisKeys,
) -> None:
    report.read += 1
    try:
        trigger = _decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        report.undecodable += 1
        return
    if (rule is not None and trigger.rule_id != rule) or (
        channel is not None and trigger.channel != channel
    ):
        report.skipped += 1
        return
    reason = next((v for k, v in headers if k == "pulse.reason"), b"") or b""
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason
    report.reasons[text[:80]] = report.reasons.get(text[:80], 0) + 1
    report.redriven += 1
    if dry_run:
        return
    if trigger.deadline < time.time():
        log.info(
            "trigger %s is past its deadline: the dispatcher will record it expired",
            trigger.trigger_id,
        )
    # Only a recorded failure is cleared: a trigger delivered meanwhile (sent
    # again by its rule, re-driven before) stays delivered.
    key = keys.delivery(trigger.trigger_id)
    if client.get(key) == b"failed":
        client.delete(key)
    producer.produce(settings.triggers_topic, key=trigger.customer_id.encode(), value=raw)
    producer.poll(0)
