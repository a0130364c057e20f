"""POST /v1/events/batch against the real Kafka: per-item results, nothing claimed
that Kafka did not acknowledge."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.producer import KafkaUnavailable
from api.schemas import MAX_BATCH
from pulse.settings import Settings, load_settings
from tests.helpers import consume, value_of

pytestmark = pytest.mark.integration


@pytest.fixture
def client(pulse_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(pulse_settings)) as c:
        yield c


def view(event_id: str, customer: str = "c-1", **fields: Any) -> dict[str, Any]:
    return {
        "type": "product_view",
        "event_id": event_id,
        "customer_id": customer,
        "sku": "S-1",
    } | fields


def post_batch(client: TestClient, events: list[Any], **kwargs: Any) -> Any:
    return client.post("/v1/events/batch", content=orjson.dumps({"events": events}), **kwargs)


def test_valid_events_are_on_the_topic_and_invalid_ones_reported_by_index(
    client: TestClient, pulse_settings: Settings
) -> None:
    events = [
        view("e-0", "c-1"),
        view("e-1", "c-2", sku=5),
        {"type": "page_view", "event_id": "e-2", "anonymous_id": "a-1"},
        {"type": "teleport", "event_id": "e-3", "customer_id": "c-1"},
        "not an event",
        view("e-5", "c-3", timestamp="2024-05-01T10:00:00Z"),
    ]
    response = post_batch(client, events)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 3)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "rejected",
        "accepted",
    ]
    assert [r.get("event_id") for r in results if r["status"] == "accepted"] == [
        "e-0",
        "e-2",
        "e-5",
    ]
    assert results[1]["errors"][0]["field"] == "sku"
    assert results[3]["errors"][0]["field"] == "type"
    assert results[4]["errors"][0]["reason"]

    records = consume(pulse_settings, pulse_settings.events_topic, 3)
    stored = {orjson.loads(value_of(r))["event_id"]: r for r in records}
    assert set(stored) == {"e-0", "e-2", "e-5"}
    assert stored["e-0"].key() == b"c-1"
    assert stored["e-2"].key() == b"anon:a-1"
    assert orjson.loads(value_of(stored["e-5"]))["timestamp"].startswith("2024-05-01T10:00:00")
    assert orjson.loads(value_of(stored["e-0"]))["timestamp"]  # receive time filled in


def test_a_full_batch_of_1000_is_accepted(client: TestClient, pulse_settings: Settings) -> None:
    events = [view(f"e-{i}", f"c-{i % 37}") for i in range(MAX_BATCH)]
    started = time.monotonic()
    response = post_batch(client, events)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == MAX_BATCH
    assert elapsed < 10, f"1000 events took {elapsed:.1f} s"
    assert len(consume(pulse_settings, pulse_settings.events_topic, MAX_BATCH)) == MAX_BATCH


def test_more_than_1000_events_is_422_naming_the_limit(client: TestClient) -> None:
    response = post_batch(client, [view(f"e-{i}") for i in range(MAX_BATCH + 1)])
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "events"
    assert "1000" in error["reason"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"\x00nope", ""),
        (b"[]", ""),
        (b"{}", "events"),
        (b'{"events": {"a": 1}}', "events"),
    ],
)
def test_a_bad_envelope_is_422(client: TestClient, body: bytes, field: str) -> None:
    response = client.post("/v1/events/batch", content=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_an_empty_batch_is_fine(client: TestClient) -> None:
    response = post_batch(client, [])
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "rejected": 0, "results": []}


def test_gzip_bodies_are_accepted(client: TestClient, pulse_settings: Settings) -> None:
    body = gzip.compress(orjson.dumps({"events": [view("g-1")]}))
    response = client.post("/v1/events/batch", content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    [record] = consume(pulse_settings, pulse_settings.events_topic, 1)
    assert orjson.loads(value_of(record))["event_id"] == "g-1"


def test_bad_gzip_is_422_and_unknown_encodings_415(client: TestClient) -> None:
    bad = client.post("/v1/events/batch", content=b"nope", headers={"Content-Encoding": "gzip"})
    assert bad.status_code == 422
    odd = client.post("/v1/events/batch", content=b"{}", headers={"Content-Encoding": "br"})
    assert odd.status_code == 415


def test_body_over_the_limit_is_413_also_after_gunzip(pulse_settings: Settings) -> None:
    settings = load_settings(environ=pulse_settings.as_environ(), max_body_bytes=1000)
    events = [view(f"e-{i}") for i in range(50)]
    with TestClient(create_app(settings)) as small:
        plain = post_batch(small, events)
        bomb = small.post(
            "/v1/events/batch",
            content=gzip.compress(orjson.dumps({"events": events})),
            headers={"Content-Encoding": "gzip"},
        )
    assert plain.status_code == 413
    assert bomb.status_code == 413


def test_unreachable_kafka_is_503_claiming_nothing(pulse_settings: Settings) -> None:
    settings = load_settings(
        environ=pulse_settings.as_environ(), kafka_bootstrap="127.0.0.1:1", ack_timeout_s=1.0
    )
    with TestClient(create_app(settings)) as down:
        started = time.monotonic()
        response = post_batch(down, [view("e-0"), view("e-1", sku=5), view("e-2")])
    assert time.monotonic() - started < 5
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["accepted"], problem["rejected"], problem["unacknowledged"]) == (0, 1, 2)
    assert [r["status"] for r in problem["results"]] == [
        "unacknowledged",
        "rejected",
        "unacknowledged",
    ]


class HalfDown:
    """A producer whose broker acknowledges only the events of customer c-ok."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        if key != b"c-ok":
            raise KafkaUnavailable("no acknowledgement from Kafka in time")
        self.sent.append(value)


def test_partial_acknowledgement_says_which_events_kafka_has(client: TestClient) -> None:
    producer = HalfDown()
    client.app.state.collector.producer = producer  # type: ignore[attr-defined]
    response = post_batch(
        client, [view("e-0", "c-ok"), view("e-1", "c-down"), view("e-2", "c-ok", sku=5)]
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    problem = response.json()
    assert "acknowledged 1 of 2" in problem["detail"]
    assert problem["results"] == [
        {"index": 0, "status": "accepted", "event_id": "e-0"},
        {"index": 1, "status": "unacknowledged", "event_id": "e-1"},
        {"index": 2, "status": "rejected", "errors": problem["results"][2]["errors"]},
    ]
    assert len(producer.sent) == 1
