"""The collector against the real Kafka: 2xx only after the broker has the event."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from engine.profile import CartItemView, ProfileView, encode_view
from pulse.keys import RedisKeys
from pulse.settings import Settings, load_settings
from tests.helpers import consume, value_of

pytestmark = pytest.mark.integration


@pytest.fixture
def client(pulse_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(pulse_settings)) as c:
        yield c


def test_accepted_event_is_on_the_topic_keyed_by_customer(
    client: TestClient, pulse_settings: Settings
) -> None:
    event = {"type": "product_view", "event_id": "pv-1", "customer_id": "c-9", "sku": "S-1"}
    response = client.post("/v1/events", content=orjson.dumps(event))
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted", "event_id": "pv-1"}

    [record] = consume(pulse_settings, pulse_settings.events_topic, 1)
    assert record.key() == b"c-9"
    stored = orjson.loads(value_of(record))
    assert stored["sku"] == "S-1" and stored["type"] == "product_view"
    assert stored["timestamp"]  # receive time filled in


def test_anonymous_events_are_keyed_by_anonymous_id(
    client: TestClient, pulse_settings: Settings
) -> None:
    event = {"type": "page_view", "event_id": "pv-2", "anonymous_id": "a-1"}
    assert client.post("/v1/events", content=orjson.dumps(event)).status_code == 202
    [record] = consume(pulse_settings, pulse_settings.events_topic, 1)
    assert record.key() == b"anon:a-1"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "add_to_cart", "event_id": "x", "customer_id": "c", "sku": 5, "price": 1}, "sku"),
        (
            {"type": "add_to_cart", "event_id": "x", "customer_id": "c", "sku": "s", "price": -1},
            "price",
        ),
        ({"type": "teleport", "event_id": "x", "customer_id": "c"}, "type"),
        (
            {
                "type": "order_placed",
                "event_id": "x",
                "customer_id": "c",
                "order_id": "o",
                "total": 1,
                "items": [{"sku": "s"}],
            },
            "items[0]",
        ),
    ],
)
def test_invalid_event_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    response = client.post("/v1/events", content=orjson.dumps(body))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["errors"][0]["field"] == field, problem
    assert problem["errors"][0]["reason"]


def test_event_without_any_customer_id_is_422(client: TestClient) -> None:
    response = client.post("/v1/events", content=b'{"type":"page_view","event_id":"x"}')
    assert response.status_code == 422
    assert "customer_id or anonymous_id" in response.json()["detail"]


def test_not_json_is_422(client: TestClient) -> None:
    response = client.post("/v1/events", content=b"\x00\xffnope")
    assert response.status_code == 422
    assert "undecodable" in response.json()["detail"]


def test_body_over_the_limit_is_413(pulse_settings: Settings) -> None:
    settings = load_settings(environ=pulse_settings.as_environ(), max_body_bytes=100)
    with TestClient(create_app(settings)) as small:
        response = small.post("/v1/events", content=b"{" + b" " * 200 + b"}")
    assert response.status_code == 413


def test_unreachable_kafka_is_503_with_retry_after(pulse_settings: Settings) -> None:
    settings = load_settings(
        environ=pulse_settings.as_environ(), kafka_bootstrap="127.0.0.1:1", ack_timeout_s=1.0
    )
    with TestClient(create_app(settings)) as down:
        started = time.monotonic()
        event = {"type": "page_view", "event_id": "x", "customer_id": "c"}
        response = down.post("/v1/events", content=orjson.dumps(event))
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert time.monotonic() - started < 5


def test_profile_of_unknown_customer_is_404(client: TestClient) -> None:
    assert client.get("/v1/customers/nobody/profile").status_code == 404


def test_every_error_is_problem_json_naming_the_field(client: TestClient) -> None:
    limit = client.get("/v1/customers/c/recommendations?limit=0")
    assert limit.status_code == 422
    assert limit.headers["content-type"] == "application/problem+json"
    assert limit.json()["errors"][0]["field"] == "limit"
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = client.delete("/v1/events")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert wrong_method.headers["content-type"] == "application/problem+json"


def test_gzip_event_is_accepted_and_other_encodings_are_415(
    client: TestClient, pulse_settings: Settings
) -> None:
    event = {"type": "page_view", "event_id": "gz-1", "customer_id": "c-1"}
    body = gzip.compress(orjson.dumps(event))
    response = client.post("/v1/events", content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 202, response.text
    [record] = consume(pulse_settings, pulse_settings.events_topic, 1)
    assert orjson.loads(value_of(record))["event_id"] == "gz-1"
    other = client.post("/v1/events", content=body, headers={"Content-Encoding": "zstd"})
    assert other.status_code == 415


def test_profile_and_recommendations_are_read_from_the_serving_view(
    client: TestClient, pulse_settings: Settings
) -> None:
    keys = RedisKeys(pulse_settings.redis_prefix)
    view = ProfileView(
        customer_id="c-7",
        events_total=3,
        category_views={"shoes": 2},
        category_affinity={"shoes": 2.0},
        cart=[CartItemView(sku="S-1", quantity=1, price=10.0, category="shoes", name=None)],
    )
    raw = redis.Redis.from_url(pulse_settings.redis)
    try:
        raw.hset(keys.profile("c-7"), "view", encode_view(view))
        raw.zadd(keys.ranking("popular"), {"S-1": 5.0, "S-2": 4.0, "S-3": 3.0})
        raw.zadd(keys.ranking("popular:shoes"), {"S-1": 5.0, "S-3": 3.0})
        raw.hset(keys.item("S-3"), mapping={"category": "shoes", "name": "Boot", "price": "50"})
        raw.hset(keys.item("S-2"), mapping={"category": "hats"})
    finally:
        raw.close()
    profile = client.get("/v1/customers/c-7/profile")
    assert profile.status_code == 200, profile.text
    assert profile.json()["events_total"] == 3
    assert profile.json()["cart"][0]["sku"] == "S-1"
    recs = client.get("/v1/customers/c-7/recommendations").json()
    # S-1 is in the cart: never recommended.
    assert {i["sku"] for i in recs["items"]} == {"S-2", "S-3"}
