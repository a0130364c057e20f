"""`pulse services`: SIGKILL a server, see it reported down, bring it back with its data.

Runs a second Kafka and Redis on their own ports and cache folder, with
persistence on as in the demo, so the session's shared servers are untouched.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from pulse import services
from pulse.services.kafka import LocalKafka, ensure_topics
from pulse.services.redis_server import LocalRedis
from pulse.settings import load_settings
from tests.helpers import consume, link_kafka_jars, produce

pytestmark = pytest.mark.integration


def test_sigkill_then_status_down_then_up_keeps_data(tmp_path: Path, kafka_jars: Path) -> None:
    settings = load_settings(
        environ={},
        cache_dir=str(tmp_path / "cache"),
        local_kafka_port=19092,
        local_redis_port=16379,
        redis_persistence=True,
        topic_prefix="svc",
        partitions=1,
    )
    link_kafka_jars(settings.cache_dir, kafka_jars)
    try:
        assert sorted(services.up(settings)) == ["kafka", "redis"]
        assert services.up(settings) == []  # idempotent: running servers are reused
        assert all(s.running and s.owner == "pulse" for s in services.status(settings))

        client = redis.Redis.from_url(settings.redis)
        client.set("svc:kept", "yes")
        produce(settings, settings.events_topic, [(b"k", b"kept-record")])
        time.sleep(1.5)  # the append-only file is fsynced every second

        redis_pid = LocalRedis(settings.cache_dir, 16379).pid()
        kafka_pid = LocalKafka(settings.cache_dir, 19092).pid()
        assert redis_pid and kafka_pid
        os.kill(redis_pid, signal.SIGKILL)
        os.kill(kafka_pid, signal.SIGKILL)
        time.sleep(0.5)
        status = {s.name: s for s in services.status(settings)}
        assert not status["redis"].running and not status["kafka"].running

        assert sorted(services.up(settings)) == ["kafka", "redis"]
        assert redis.Redis.from_url(settings.redis).get("svc:kept") == b"yes"
        ensure_topics(settings)
        values = [m.value() for m in consume(settings, settings.events_topic, 1, timeout_s=30)]
        assert values == [b"kept-record"]
    finally:
        assert sorted(services.down(settings)) == ["kafka", "redis"]
    assert not any(s.running for s in services.status(settings))
    assert services.down(settings) == []  # nothing of ours left to stop
