"""Every way in, at volume: HTTP API, Segment's client, Kafka directly, plus garbage.

10,000 events through the collector, 10,000 through the unchanged
segment-analytics-python client, 10,000 produced straight to Kafka and 1,000
malformed records, with part of each path sent twice. Every profile must count
each event exactly once, and the dead-letter topic must hold exactly the 1,000
malformed records.
"""

from __future__ import annotations

import base64
import random
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import redis
from segment.analytics import Client

from engine.profile import parse_view
from pulse.settings import Settings
from tests.e2e.conftest import READ_KEY, WRITE_KEY
from tests.helpers import consume, produce, produce_events, value_of, wait_for

pytestmark = pytest.mark.e2e

PER_PATH = 10_000
MALFORMED = 1_000
CUSTOMERS = 100


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _event(path: str, i: int) -> dict[str, Any]:
    customer = f"cust-{i % CUSTOMERS:03d}"
    if i % 2:
        return {
            "type": "page_view",
            "event_id": f"{path}-{i}",
            "customer_id": customer,
            "url": f"https://shop.example/p/{i}",
        }
    return {
        "type": "product_view",
        "event_id": f"{path}-{i}",
        "customer_id": customer,
        "sku": f"SKU-{i % 37}",
        "category": "mugs",
        "price": 3.5,
    }


def _malformed(i: int) -> bytes:
    kinds = [
        b"\xff\xfe not json",
        b'{"type": "product_view", "event_id": "m", "customer_id": "cust-000"}',  # no sku
        b'{"type": "teleported", "event_id": "m", "customer_id": "cust-000"}',
        b'{"type": "page_view", "event_id": "m"}',  # neither id
        b'{"type": "order_placed", "event_id": "m", "customer_id": "c", "order_id": "o",'
        b' "total": -5}',
        b"[1, 2, 3]",
        b"",
    ]
    return kinds[i % len(kinds)] + (b" " * (i % 3) if i % len(kinds) not in (0, 5, 6) else b"")


def test_every_path_counts_each_event_exactly_once(stack: Settings) -> None:
    settings = stack
    base = f"http://{settings.api_host}:{settings.api_port}"
    expected: Counter[str] = Counter()

    # 1. The collector: batches of 500, a slice of them sent twice (a client retry).
    http_events = [_event("http", i) for i in range(PER_PATH)]
    with httpx.Client(base_url=base, headers=_auth(WRITE_KEY), timeout=30) as client:
        for start in range(0, PER_PATH, 500):
            batch = http_events[start : start + 500]
            response = client.post("/v1/events/batch", json={"events": batch})
            assert response.status_code == 200, response.text
            assert response.json()["accepted"] == len(batch)
        retry = client.post("/v1/events/batch", json={"events": http_events[:500]})
        assert retry.status_code == 200
        for event in http_events[:5]:  # and a few single posts of the same events
            assert client.post("/v1/events", json=event).status_code == 202
    expected.update(e["customer_id"] for e in http_events)

    # 2. Segment's own client, unchanged, with its own message ids.
    errors: list[Exception] = []
    segment = Client(
        WRITE_KEY,
        host=base,
        on_error=lambda e, _b: errors.append(e),
        upload_size=250,
        max_queue_size=PER_PATH + 1000,
    )
    for i in range(PER_PATH):
        customer = f"cust-{i % CUSTOMERS:03d}"
        segment.track(
            customer,
            "Product Viewed",
            {"product_id": f"SKU-{i % 37}", "category": "mugs", "price": 3.5},
            message_id=f"seg-{i}",
        )
    for i in range(300):  # Segment retries: the same message ids again
        segment.track(
            f"cust-{i % CUSTOMERS:03d}",
            "Product Viewed",
            {"product_id": f"SKU-{i % 37}"},
            message_id=f"seg-{i}",
        )
    segment.flush()
    segment.shutdown()
    assert errors == []
    expected.update(f"cust-{i % CUSTOMERS:03d}" for i in range(PER_PATH))

    # 3. Straight to Kafka, with 2,000 of them produced twice.
    direct = [_event("kafka", i) for i in range(PER_PATH)]
    produce_events(settings, direct)
    produce_events(settings, random.Random(1).sample(direct, 2000))
    expected.update(e["customer_id"] for e in direct)

    # 4. Garbage straight to Kafka.
    produce(settings, settings.events_topic, [(b"junk", _malformed(i)) for i in range(MALFORMED)])

    client_r: redis.Redis = redis.Redis.from_url(settings.redis)

    def profiles() -> dict[str, dict[str, Any]]:
        out = {}
        for customer in expected:
            raw = client_r.hget(f"{settings.redis_prefix}:{{{customer}}}:profile", "view")
            if isinstance(raw, bytes):
                out[customer] = parse_view(raw)
        return out

    def settled() -> bool:
        current = profiles()
        return len(current) == CUSTOMERS and all(
            current[c]["events_total"] == n for c, n in expected.items()
        )

    wait_for(settled, 90, "every event on its profile")
    time.sleep(2)  # nothing more may arrive: duplicates must stay dropped
    final = profiles()
    assert {c: p["events_total"] for c, p in final.items()} == dict(expected)
    assert sum(p["duplicate_events"] for p in final.values()) == 500 + 5 + 300 + 2000
    assert sum(expected.values()) == 3 * PER_PATH

    dead = consume(settings, settings.events_dlq_topic, MALFORMED + 1, timeout_s=15)
    assert len(dead) == MALFORMED
    for record in dead:
        headers = dict(record.headers() or [])
        assert headers["pulse.reason"]
        assert headers["pulse.source.topic"] == settings.events_topic.encode()
    assert sorted(value_of(r) for r in dead) == sorted(_malformed(i) for i in range(MALFORMED))

    # The profile is what the API serves (read key).
    with httpx.Client(base_url=base, headers=_auth(READ_KEY), timeout=10) as client:
        served = client.get("/v1/customers/cust-007/profile").json()
    assert served["events_total"] == expected["cust-007"]
