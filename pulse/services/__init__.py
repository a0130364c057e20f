"""Start, stop and inspect the real Kafka and Redis that Pulse runs on.

The same functions serve ``pulse services``, ``pulse demo``, the test fixtures
and CI, so every one of them runs on identical servers.
"""

from __future__ import annotations

import logging

from pulse.services import kafka, redis_server
from pulse.services.process import ServiceError, ServiceStatus
from pulse.settings import Settings

__all__ = ["ServiceError", "ServiceStatus", "down", "status", "up"]

log = logging.getLogger(__name__)


def up(settings: Settings, *, create_topics: bool = True) -> list[str]:
    """Bring up whatever Pulse manages and is not running; returns what it started."""
    started = []
    if settings.redis_managed and redis_server.LocalRedis(
        settings.cache_dir, settings.local_redis_port
    ).start(persistence=settings.redis_persistence):
        started.append("redis")
    if (
        settings.kafka_managed
        and kafka.LocalKafka(settings.cache_dir, settings.local_kafka_port).start()
    ):
        started.append("kafka")
    if not settings.kafka_managed and not kafka.metadata_ok(settings.kafka, timeout_s=5):
        raise ServiceError(f"no Kafka broker answers at {settings.kafka} (PULSE_KAFKA_BOOTSTRAP)")
    if create_topics:
        kafka.ensure_topics(settings)
    return started


def down(settings: Settings) -> list[str]:
    """Stop only the servers that ``up`` started (the ones with our pidfile)."""
    stopped = []
    kafka_server = kafka.LocalKafka(settings.cache_dir, settings.local_kafka_port)
    redis_local = redis_server.LocalRedis(settings.cache_dir, settings.local_redis_port)
    if settings.kafka_managed and kafka_server.stop():
        stopped.append("kafka")
    if settings.redis_managed and redis_local.stop():
        stopped.append("redis")
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    return [kafka.status(settings), redis_server.status(settings)]
