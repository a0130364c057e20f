"""Test helpers that talk to the real Kafka and run Pulse's own processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient

from pulse.services.kafka import ensure_topics
from pulse.settings import Settings, load_settings


def produce(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = Producer(
        {"bootstrap.servers": settings.kafka, "enable.idempotence": "true", "linger.ms": "5"}
    )
    count = 0
    for key, value in records:
        producer.produce(topic, key=key, value=value)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} records not acknowledged"
    return count


def produce_events(settings: Settings, events: Iterable[dict[str, Any]]) -> int:
    def records() -> Iterable[tuple[bytes | None, bytes]]:
        for event in events:
            key = event.get("customer_id") or f"anon:{event.get('anonymous_id')}"
            yield str(key).encode(), orjson.dumps(event)

    return produce(settings, settings.events_topic, records())


def consume(
    settings: Settings, topic: str, expected: int, timeout_s: float = 30.0
) -> list[Message]:
    """Read ``topic`` from the start until ``expected`` records arrived or time ran out."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    out.append(msg)
    finally:
        consumer.close()
    return out


def value_of(msg: Message) -> bytes:
    """The value of a consumed record; a record without one (a tombstone) fails the test."""
    value = msg.value()
    assert value is not None, (
        f"record at {msg.topic()}[{msg.partition()}]@{msg.offset()} has no value"
    )
    return value


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class PulseProcess:
    """One `pulse <command>` child process with its output in a file."""

    def __init__(self, settings: Settings, log_dir: Path, name: str, *args: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.out_path = log_dir / f"{name}.out"
        env = dict(os.environ, **settings.as_environ())
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._out = open(self.out_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pulse.cli", *args],
            env=env,
            stdout=self._out,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output_lines(self) -> list[str]:
        return self.out_path.read_text().splitlines()

    def log_text(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL: no chance to flush or snapshot, as in a crash."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        self._out.close()


def link_kafka_jars(cache_dir: str | Path, jars: Path) -> None:
    """Give a temporary cache the session's Kafka jars (the ``kafka_jars`` fixture),
    so the broker started there needs no Maven run of its own."""
    home = Path(cache_dir) / "kafka"
    home.mkdir(parents=True, exist_ok=True)
    (home / "lib").symlink_to(jars.resolve(), target_is_directory=True)


def json_lines(text: str) -> list[Any]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def isolated_settings(live: Settings, recovery_dir: Path) -> Iterator[Settings]:
    """Settings with their own topics, keys, groups and recovery dir on the live
    services; the topics and keys are removed afterwards. (The ``pulse_settings``
    fixture for one test; a module that shares one stack uses it directly.)"""
    tag = f"t{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        environ={},
        kafka_bootstrap=live.kafka_bootstrap,
        redis_url=live.redis_url,
        cache_dir=live.cache_dir,
        local_kafka_port=live.local_kafka_port,
        local_redis_port=live.local_redis_port,
        topic_prefix=tag,
        redis_prefix=tag,
        consumer_group_prefix=tag,
        partitions=2,
        recovery_dir=str(recovery_dir),
        snapshot_interval_s=1.0,
        redis_persistence=False,
    )
    ensure_topics(settings)
    try:
        yield settings
    finally:
        admin = AdminClient({"bootstrap.servers": settings.kafka})
        for fut in admin.delete_topics(list(settings.all_topics), operation_timeout=10).values():
            with contextlib.suppress(Exception):  # already gone is fine
                fut.result()
        client: redis.Redis = redis.Redis.from_url(settings.redis)
        keys: list[Any] = list(client.scan_iter(match=f"{tag}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
