"""Shared fixtures: the real Kafka and Redis, and per-test isolation on them.

The session starts the servers through the same code as `pulse services up`
(reusing them when they already run). Each test that needs them gets its own
topic prefix, Redis key prefix, consumer groups and recovery directory, and
its topics and keys are removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka.admin import AdminClient

from pulse import services
from pulse.services.kafka import ensure_topics
from pulse.settings import Settings, load_settings


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("PULSE_")}
    env.setdefault("PULSE_REDIS_PERSISTENCE", "false")
    return load_settings(environ=env)


@pytest.fixture(scope="session")
def live_services(base_settings: Settings) -> Settings:
    """Kafka and Redis up (started if absent) for the whole session."""
    services.up(base_settings, create_topics=False)
    return base_settings


@pytest.fixture
def pulse_settings(live_services: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings isolated for one test: unique topics, keys, groups, recovery dir."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        environ={},
        kafka_bootstrap=live_services.kafka_bootstrap,
        redis_url=live_services.redis_url,
        cache_dir=live_services.cache_dir,
        local_kafka_port=live_services.local_kafka_port,
        local_redis_port=live_services.local_redis_port,
        topic_prefix=tag,
        redis_prefix=tag,
        consumer_group_prefix=tag,
        partitions=2,
        recovery_dir=str(tmp_path / "recovery"),
        snapshot_interval_s=1.0,
        redis_persistence=False,
    )
    ensure_topics(settings)
    yield settings
    admin = AdminClient({"bootstrap.servers": settings.kafka})
    for fut in admin.delete_topics(list(settings.all_topics), operation_timeout=10).values():
        with contextlib.suppress(Exception):  # already gone is fine
            fut.result()
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    keys: list[Any] = list(client.scan_iter(match=f"{tag}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client(pulse_settings: Settings) -> Iterator[redis.Redis]:
    client: redis.Redis = redis.Redis.from_url(pulse_settings.redis, decode_responses=True)
    yield client
    client.close()
