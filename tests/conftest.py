"""Shared fixtures: the real Kafka and Redis, and per-test isolation on them.

The session starts the servers through the same code as `pulse services up`
(reusing them when they already run). Each test that needs them gets its own
topic prefix, Redis key prefix, consumer groups and recovery directory, and
its topics and keys are removed afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pulse import services
from pulse.services.kafka import LocalKafka
from pulse.settings import Settings, load_settings
from tests.helpers import isolated_settings


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


@pytest.fixture(scope="session")
def kafka_jars(base_settings: Settings) -> Path:
    """Kafka's jars, fetched once into the project's cache as `pulse services up` does.

    Tests that run a broker of their own in a temporary cache link its ``lib`` here
    (``tests.helpers.link_kafka_jars``) instead of running Maven again for each
    test (``LocalKafka.install`` keeps parallel test workers from fetching at once).
    """
    local = LocalKafka(base_settings.cache_dir, base_settings.local_kafka_port)
    local.install()
    return local.lib


@pytest.fixture
def pulse_settings(live_services: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings isolated for one test: unique topics, keys, groups, recovery dir."""
    with isolated_settings(live_services, tmp_path / "recovery") as settings:
        yield settings


@pytest.fixture
def redis_client(pulse_settings: Settings) -> Iterator[redis.Redis]:
    client: redis.Redis = redis.Redis.from_url(pulse_settings.redis, decode_responses=True)
    yield client
    client.close()
