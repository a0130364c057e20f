"""The collector while Kafka is down: 503, and nothing it acknowledged is lost.

Runs its own Kafka on other ports so the session's shared broker is untouched.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from pulse import services
from pulse.services.kafka import LocalKafka, ensure_topics
from pulse.settings import Settings, load_settings
from tests.helpers import consume, link_kafka_jars, value_of

pytestmark = pytest.mark.integration


def _event(i: int) -> bytes:
    return orjson.dumps({"type": "page_view", "event_id": f"o-{i}", "customer_id": f"c{i % 7}"})


def test_kafka_down_gives_503_and_acknowledged_events_survive(
    live_services: Settings, tmp_path: Path, kafka_jars: Path
) -> None:
    settings = load_settings(
        environ={},
        cache_dir=str(tmp_path / "cache"),
        local_kafka_port=19192,
        redis_url=live_services.redis,
        topic_prefix="outage",
        partitions=2,
        ack_timeout_s=1.0,
    )
    link_kafka_jars(settings.cache_dir, kafka_jars)
    broker = LocalKafka(settings.cache_dir, 19192)
    try:
        services.up(settings)
        acknowledged: list[str] = []
        with TestClient(create_app(settings)) as client:
            # A fresh broker may still be loading its coordinators: like a real
            # client, retry the first event until it is accepted.
            deadline = time.monotonic() + 30
            while client.post("/v1/events", content=_event(0)).status_code != 202:
                assert time.monotonic() < deadline, "collector never accepted an event"
                time.sleep(0.5)
            for i in range(200):
                response = client.post("/v1/events", content=_event(i))
                if response.status_code == 202:
                    acknowledged.append(response.json()["event_id"])
            assert len(acknowledged) == 200

            pid = broker.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            down = [client.post("/v1/events", content=_event(1000 + i)) for i in range(3)]
            assert [r.status_code for r in down] == [503, 503, 503]
            assert all(r.headers["retry-after"] for r in down)
            assert down[0].json()["title"]

            broker.start()
            ensure_topics(settings)
            # Accepted again once the broker is back (the producer reconnects).
            deadline = time.monotonic() + 30
            while client.post("/v1/events", content=_event(2000)).status_code != 202:
                assert time.monotonic() < deadline, "collector did not recover"
                time.sleep(0.5)

        records = consume(settings, settings.events_topic, 201, timeout_s=20)
        stored = {orjson.loads(value_of(m))["event_id"] for m in records}
        assert set(acknowledged) <= stored, "an acknowledged event is missing"
    finally:
        broker.stop()
