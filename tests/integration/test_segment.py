"""Segment's own Python client, unchanged, sending to Pulse's API over real HTTP.

The API runs in a real uvicorn server on a free port in a background thread;
`segment-analytics-python` posts to `{host}/v1/batch` with the write key as
HTTP Basic user name, and the mapped Pulse events must arrive on the topic.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from segment import analytics
from segment.analytics import Client

from api.app import create_app
from pulse.settings import Settings, load_settings
from tests.helpers import consume, value_of

pytestmark = pytest.mark.integration

WRITE_KEY = "seg-write-key-0001"


class Server:
    """The API in uvicorn on 127.0.0.1 and a port the OS picked."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@pytest.fixture
def keyed_settings(pulse_settings: Settings) -> Settings:
    return load_settings(
        environ=pulse_settings.as_environ(), write_keys=[WRITE_KEY], read_keys=["seg-read-key-01"]
    )


@pytest.fixture
def server(keyed_settings: Settings) -> Iterator[Server]:
    with Server(keyed_settings) as running:
        yield running


@pytest.fixture
def errors() -> list[Exception]:
    return []


@pytest.fixture
def default_client(server: Server, errors: list[Exception]) -> Iterator[None]:
    """The module-level API as Segment documents it, pointed at Pulse."""
    saved = (analytics.write_key, analytics.host, analytics.on_error, analytics.default_client)
    analytics.write_key = WRITE_KEY
    analytics.host = server.url
    analytics.on_error = lambda error, _batch: errors.append(error)
    analytics.default_client = None
    try:
        yield
    finally:
        if analytics.default_client is not None:
            analytics.default_client.shutdown()
        analytics.write_key, analytics.host, analytics.on_error, analytics.default_client = saved


def stored_events(
    settings: Settings, expected: int
) -> dict[str, tuple[bytes | None, dict[str, Any]]]:
    records = consume(settings, settings.events_topic, expected)
    out: dict[str, tuple[bytes | None, dict[str, Any]]] = {}
    for record in records:
        event = orjson.loads(value_of(record))
        out[event["event_id"]] = (record.key(), event)
    return out


def test_the_segment_client_sends_an_ecommerce_journey(
    default_client: None, errors: list[Exception], keyed_settings: Settings
) -> None:
    user, anon = f"u-{uuid.uuid4().hex[:8]}", "anon-1"
    when = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    context = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "locale": "de-DE"}
    analytics.page(
        anonymous_id=anon,
        name="Home",
        message_id="m-page",
        properties={"url": "https://shop.example/", "title": "Shop"},
        context=context,
    )
    analytics.identify(
        user,
        message_id="m-identify",
        anonymous_id=anon,
        traits={"email": "ann@example.com", "firstName": "Ann", "address": {"postalCode": "10115"}},
    )
    analytics.track(user, "Products Searched", {"query": "runners"}, message_id="m-search")
    analytics.track(
        user,
        "Product Viewed",
        {"product_id": "P-1", "category": "shoes", "price": 59.9, "name": "Runner"},
        message_id="m-view",
        timestamp=when,
    )
    analytics.track(
        user,
        "Product Added",
        {"product_id": "P-1", "price": 59.9, "quantity": 2},
        message_id="m-add",
    )
    analytics.track(user, "Product Removed", {"sku": "P-1", "quantity": 1}, message_id="m-remove")
    analytics.track(user, "Cart Viewed", message_id="m-cart")
    analytics.track(user, "Checkout Started", {"revenue": 59.9}, message_id="m-checkout")
    analytics.track(
        user,
        "Order Completed",
        {
            "order_id": "O-1",
            "total": 64.9,
            "revenue": 59.9,
            "currency": "EUR",
            "products": [
                {
                    "product_id": "P-1",
                    "sku": "SKU-1",
                    "price": 59.9,
                    "quantity": 1,
                    "category": "shoes",
                    "name": "Runner",
                }
            ],
        },
        message_id="m-order",
    )
    analytics.track(
        user, "Order Refunded", {"order_id": "O-1", "total": 5.0}, message_id="m-refund"
    )
    analytics.track(user, "Coupon Applied", {"coupon_id": "C-1"}, message_id="m-custom")
    analytics.flush()
    assert errors == []

    events = stored_events(keyed_settings, 11)
    assert len(events) == 11, sorted(events)
    types = {event_id: event["type"] for event_id, (_, event) in events.items()}
    assert types == {
        "m-page": "page_view",
        "m-identify": "identify",
        "m-search": "search",
        "m-view": "product_view",
        "m-add": "add_to_cart",
        "m-remove": "remove_from_cart",
        "m-cart": "cart_viewed",
        "m-checkout": "checkout_started",
        "m-order": "order_placed",
        "m-refund": "order_refunded",
        "m-custom": "custom",
    }
    for event_id, (key, event) in events.items():
        if event_id == "m-page":
            assert key == f"anon:{anon}".encode() and "customer_id" not in event
        else:
            assert key == user.encode() and event["customer_id"] == user
        assert event["timestamp"]

    page = events["m-page"][1]
    assert (page["url"], page["title"]) == ("https://shop.example/", "Shop")
    assert page["context"] == {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0", "locale": "de-DE"}
    identify = events["m-identify"][1]
    assert identify["anonymous_id"] == anon
    assert identify["traits"] == {
        "email": "ann@example.com",
        "first_name": "Ann",
        "postcode": "10115",
    }
    assert events["m-search"][1]["query"] == "runners"
    view = events["m-view"][1]
    assert (view["sku"], view["category"], view["price"], view["name"]) == (
        "P-1",
        "shoes",
        59.9,
        "Runner",
    )
    assert view["timestamp"].startswith("2024-05-01T10:00:00")
    add = events["m-add"][1]
    assert (add["sku"], add["price"], add["quantity"]) == ("P-1", 59.9, 2)
    assert (events["m-remove"][1]["sku"], events["m-remove"][1]["quantity"]) == ("P-1", 1)
    assert events["m-checkout"][1]["value"] == 59.9
    order = events["m-order"][1]
    assert (order["order_id"], order["total"], order["currency"]) == ("O-1", 64.9, "EUR")
    assert order["items"] == [
        {"sku": "P-1", "price": 59.9, "category": "shoes", "name": "Runner"}  # quantity 1: default
    ]
    assert events["m-refund"][1]["amount"] == 5.0
    custom = events["m-custom"][1]
    assert (custom["name"], custom["properties"]) == ("Coupon Applied", {"coupon_id": "C-1"})


def test_sync_mode_and_gzip(server: Server, keyed_settings: Settings) -> None:
    client = Client(WRITE_KEY, host=server.url, sync_mode=True, gzip=True, max_retries=0)
    ok, _ = client.track("u-gz", "Product Viewed", {"sku": "S-9"}, message_id="m-gz")
    assert ok
    ok, _ = client.page("u-gz", name="Basket", message_id="m-page-gz")
    assert ok
    events = stored_events(keyed_settings, 2)
    assert events["m-gz"][1]["sku"] == "S-9"
    assert events["m-page-gz"][1]["title"] == "Basket"


def test_a_wrong_write_key_is_refused(server: Server, keyed_settings: Settings) -> None:
    failures: list[Exception] = []
    client = Client(
        "not-a-key",
        host=server.url,
        on_error=lambda error, _batch: failures.append(error),
        max_retries=0,
    )
    client.track("u-1", "Cart Viewed", message_id="m-denied")
    client.flush()
    client.join()
    assert failures and getattr(failures[0], "status", None) == 401
    assert consume(keyed_settings, keyed_settings.events_topic, 1, timeout_s=2) == []


def test_segment_http_api_directly(server: Server, keyed_settings: Settings) -> None:
    """The single-call endpoints, as Segment's HTTP API documents them (no type field)."""
    auth = (WRITE_KEY, "")
    with httpx.Client(base_url=server.url, auth=auth) as http:
        track = http.post(
            "/v1/track",
            json={
                "userId": "u-h",
                "event": "Product Added",
                "messageId": "h-1",
                "properties": {"sku": "S-1", "price": 5},
            },
        )
        identify = http.post(
            "/v1/identify", json={"userId": "u-h", "messageId": "h-2", "traits": {"phone": 123}}
        )
        page = http.post(
            "/v1/page", json={"anonymousId": "a-h", "messageId": "h-3", "name": "Home"}
        )
        invalid = http.post(
            "/v1/track",
            json={
                "userId": "u-h",
                "event": "Product Added",
                "messageId": "h-4",
                "properties": {"sku": "S-1", "price": "5"},
            },
        )
        no_id = http.post("/v1/track", json={"userId": "u-h", "event": "Cart Viewed"})
        wrong_type = http.post(
            "/v1/track", json={"type": "identify", "userId": "u-h", "messageId": "h-5"}
        )
    assert [r.status_code for r in (track, identify, page)] == [200, 200, 200]
    assert track.json() == {"success": True, "event_id": "h-1"}
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "properties.price"
    assert no_id.status_code == 422
    assert no_id.json()["errors"][0]["field"] == "messageId"
    assert wrong_type.status_code == 422
    assert wrong_type.json()["errors"][0]["field"] == "type"
    events = stored_events(keyed_settings, 3)
    assert set(events) == {"h-1", "h-2", "h-3"}
    assert events["h-2"][1]["traits"] == {"phone": "123"}


def test_segment_batch_reports_each_call(server: Server, keyed_settings: Settings) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u-b", "event": "Cart Viewed", "messageId": "b-1"},
            {"type": "group", "userId": "u-b", "groupId": "g", "messageId": "b-2"},
            {
                "type": "track",
                "userId": "u-b",
                "event": "Order Completed",
                "messageId": "b-3",
                "properties": {"total": 5},
            },
            {"type": "screen", "userId": "u-b", "name": "Home", "messageId": "b-4"},
        ],
        "context": {"ip": "198.51.100.1"},
        "sentAt": datetime.now(UTC).isoformat(),
    }
    response = httpx.post(f"{server.url}/v1/batch", json=batch, auth=(WRITE_KEY, ""))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["accepted"], body["rejected"]) == (True, 2, 2)
    results = body["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected", "accepted"]
    assert results[1]["errors"][0]["field"] == "type"
    assert results[2]["errors"][0]["field"] == "properties.order_id"
    events = stored_events(keyed_settings, 2)
    assert events["b-1"][1]["context"] == {"ip": "198.51.100.1"}
    assert events["b-4"][1]["channel"] == "app"
