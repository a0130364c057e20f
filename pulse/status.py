"""``pulse status``: is the pipeline keeping up?

Reads what the processes publish (dataflow positions and worker counters in
Redis, the dispatcher's committed offsets in Kafka, the recovery snapshots on
disk) and compares with the topics' high watermarks.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition

from engine.profile import STATE_VERSION
from pulse.keys import RedisKeys
from pulse.settings import Settings


@dataclass
class PartitionLag:
    topic: str
    partition: int
    high_watermark: int
    position: int | None  # next offset the reader will read; None = never read

    @property
    def lag(self) -> int | None:
        return None if self.position is None else max(0, self.high_watermark - self.position)


@dataclass
class PipelineStatus:
    dataflow: list[PartitionLag] = field(default_factory=list)
    dispatcher: list[PartitionLag] = field(default_factory=list)
    events_per_s: float | None = None
    processed: int = 0
    workers: int = 0
    last_progress_s_ago: float | None = None
    last_snapshot: str | None = None
    rules: dict[str, Any] | None = None  # the version the dataflow loaded last
    rule_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("dataflow", "dispatcher"):
            for row, lag in zip(out[name], getattr(self, name), strict=True):
                row["lag"] = lag.lag
        return out


def _watermarks(settings: Settings, topic: str, group: str | None) -> list[PartitionLag]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": group or f"pulse-status-{uuid.uuid4().hex}",
            "enable.auto.commit": "false",
        }
    )
    try:
        return watermarks(consumer, topic, committed=group is not None)
    finally:
        consumer.close()


def watermarks(
    consumer: Consumer, topic: str, *, committed: bool, timeout_s: float = 5.0
) -> list[PartitionLag]:
    """Each partition's end, and with ``committed`` the consumer's group position.

    Takes the consumer so a long-lived reader (the console) asks on one
    connection instead of opening one per look."""
    metadata = consumer.list_topics(topic, timeout=timeout_s)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise KafkaException(f"topic {topic} does not exist (`pulse services up` creates it)")
    partitions = sorted(found.partitions)
    positions: dict[int, int] = {}
    if committed and partitions:
        tps = [TopicPartition(topic, p) for p in partitions]
        for tp in consumer.committed(tps, timeout=timeout_s):
            if tp.offset >= 0:
                positions[tp.partition] = tp.offset
    rows = []
    for p in partitions:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        rows.append(PartitionLag(topic, p, high, positions.get(p)))
    return rows


def worker_counters(client: redis.Redis, keys: RedisKeys) -> dict[str, dict[str, float]]:
    """Each dataflow worker's published counters: processed, started_at, at."""
    raw: dict[bytes, bytes] = client.hgetall(keys.workers())  # type: ignore[assignment]
    return {k.decode(): orjson.loads(v) for k, v in raw.items()}


def positions(client: redis.Redis, keys: RedisKeys) -> dict[str, int]:
    """The dataflow's input positions, ``"<topic>:<partition>"`` -> next offset."""
    raw: dict[bytes, bytes] = client.hgetall(keys.progress())  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


def rule_status(
    client: redis.Redis, keys: RedisKeys
) -> tuple[dict[str, Any] | None, dict[str, dict[str, int]]]:
    """The dataflow's rule version and each rule's decision counts, from Redis."""
    stats: dict[str, dict[str, int]] = {}
    pattern = keys.rule_stats("*")
    for key in client.scan_iter(match=pattern, count=1000):
        rule_id = key.decode().split("{", 1)[1].split("}", 1)[0]
        counts: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
        stats[rule_id] = {k.decode(): int(v) for k, v in counts.items()}
    return loaded_rules(client, keys), dict(sorted(stats.items()))


def loaded_rules(client: redis.Redis, keys: RedisKeys) -> dict[str, Any] | None:
    """The rule version the dataflow loaded last, as it reported it."""
    raw = client.get(keys.rules_status())
    return orjson.loads(raw) if isinstance(raw, bytes) else None


def rule_counts(
    client: redis.Redis, keys: RedisKeys, rule_ids: Iterable[str]
) -> dict[str, dict[str, int]]:
    """The decision counts of these rules, in one round trip.

    ``rule_status`` finds the rules with SCAN, which walks the whole keyspace:
    fine for ``pulse status`` once, 100 ms and more per look with 100,000
    profiles in Redis, too slow for a page that polls (the console)."""
    wanted = sorted(set(rule_ids))
    pipe = client.pipeline(transaction=False)
    for rule_id in wanted:
        pipe.hgetall(keys.rule_stats(rule_id))
    found: dict[str, dict[str, int]] = {}
    for rule_id, counts in zip(wanted, pipe.execute(), strict=True):
        if counts:
            found[rule_id] = {k.decode(): int(v) for k, v in counts.items()}
    return found


def last_snapshot(recovery_dir: Path) -> str | None:
    """When the dataflow last wrote a snapshot (UTC), from its recovery partitions."""
    latest: str | None = None
    for part in sorted(recovery_dir.glob("part-*.sqlite3")):
        try:
            with sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=1) as db:
                row = db.execute(
                    "SELECT max(created_at) FROM (SELECT created_at FROM snaps "
                    "UNION ALL SELECT created_at FROM fronts)"
                ).fetchone()
        except sqlite3.Error:
            continue
        if row and row[0] and (latest is None or row[0] > latest):
            latest = row[0]
    return latest


def collect(settings: Settings, sample_s: float = 1.0) -> PipelineStatus:
    status = PipelineStatus()
    keys = RedisKeys(settings.redis_prefix)
    client: redis.Redis = redis.Redis.from_url(settings.redis, socket_timeout=2)
    try:
        read = positions(client, keys)
        before = worker_counters(client, keys)
        time.sleep(sample_s)
        after = worker_counters(client, keys)
        status.rules, status.rule_stats = rule_status(client, keys)
    except redis.RedisError as exc:
        status.errors.append(f"redis: {exc}")
        read, before, after = {}, {}, {}
    status.workers = len(after)
    status.processed = int(sum(w["processed"] for w in after.values()))
    if after:
        status.last_progress_s_ago = time.time() - max(w["at"] for w in after.values())
        delta = sum(
            w["processed"] - before.get(i, {"processed": w["processed"]})["processed"]
            for i, w in after.items()
        )
        status.events_per_s = delta / sample_s
    try:
        status.dataflow = _watermarks(settings, settings.events_topic, None)
        for row in status.dataflow:
            row.position = read.get(f"{row.topic}:{row.partition}")
        status.dispatcher = _watermarks(
            settings, settings.triggers_topic, f"{settings.consumer_group_prefix}.dispatch"
        )
    except KafkaException as exc:
        status.errors.append(f"kafka: {exc}")
    status.last_snapshot = last_snapshot(
        settings.effective_recovery_dir / f"state-v{STATE_VERSION}"
    )
    return status


def render(status: PipelineStatus) -> str:
    lines = []
    rate = "-" if status.events_per_s is None else f"{status.events_per_s:,.0f}"
    ago = "-" if status.last_progress_s_ago is None else f"{status.last_progress_s_ago:.1f} s ago"
    lines.append(
        f"dataflow: {status.workers} worker(s), {status.processed:,} events processed, "
        f"{rate} events/s now, last progress {ago}"
    )
    snap = status.last_snapshot
    if snap:
        age = time.time() - datetime.fromisoformat(snap).replace(tzinfo=UTC).timestamp()
        lines.append(f"last snapshot: {snap} UTC ({age:.0f} s ago)")
    else:
        lines.append("last snapshot: none")
    for title, rows in (("dataflow input", status.dataflow), ("dispatcher", status.dispatcher)):
        lines.append(f"\n{title}:")
        lines.append(f"  {'topic':28} {'part':>4} {'end':>10} {'position':>10} {'lag':>8}")
        for r in rows:
            pos = "-" if r.position is None else str(r.position)
            lag = "-" if r.lag is None else str(r.lag)
            lines.append(
                f"  {r.topic:28} {r.partition:>4} {r.high_watermark:>10} {pos:>10} {lag:>8}"
            )
    lines += _render_rules(status)
    for error in status.errors:
        lines.append(f"error: {error}")
    return "\n".join(lines)


def _render_rules(status: PipelineStatus) -> list[str]:
    lines = [""]
    loaded = status.rules
    if loaded is None:
        lines.append("rules: the dataflow has not reported a rule version")
    else:
        effective = loaded.get("effective_at")
        if effective is None:
            since = "from rules_dir (nothing deployed)"
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(effective))
            since = (
                f"in force since {when}" if effective <= time.time() else f"in force from {when}"
            )
        lines.append(f"rules: version {loaded['version']} ({loaded['rules']} enabled), {since}")
    if status.rule_stats:
        header = ("rule", "fired", "held out", "deferred", "converted")
        lines.append("  {:22} {:>7} {:>8} {:>8} {:>9}  suppressed by".format(*header))
        for rule_id, counts in status.rule_stats.items():
            suppressed = ", ".join(
                f"{k.split(':', 1)[1]} {v}"
                for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
                if k.startswith("suppressed:")
            )
            numbers = (counts.get(k, 0) for k in ("fired", "held_out", "deferred", "converted"))
            lines.append(
                "  {:22} {:>7} {:>8} {:>8} {:>9}  {}".format(rule_id, *numbers, suppressed or "-")
            )
    return lines
