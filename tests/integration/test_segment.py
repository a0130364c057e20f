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
from datetime import UTC, datetime, timedelta
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
        no_id_again = http.post("/v1/track", json={"event": "Cart Viewed", "userId": "u-h"})
        wrong_type = http.post(
            "/v1/track", json={"type": "identify", "userId": "u-h", "messageId": "h-5"}
        )
    assert [r.status_code for r in (track, identify, page)] == [200, 200, 200]
    assert track.json() == {"success": True, "event_id": "h-1"}
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "properties.price"
    # Without messageId, an id derived from the content: a resent call has the same.
    assert no_id.status_code == 200 and no_id.json()["event_id"].startswith("auto-")
    assert no_id_again.json() == no_id.json()
    assert wrong_type.status_code == 422
    assert wrong_type.json()["errors"][0]["field"] == "type"
    events = stored_events(keyed_settings, 5)
    assert set(events) == {"h-1", "h-2", "h-3", no_id.json()["event_id"]}
    assert events["h-2"][1]["traits"] == {"phone": "123"}


def test_segment_batch_reports_each_call(server: Server, keyed_settings: Settings) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u-b", "event": "Cart Viewed", "messageId": "b-1"},
            {"type": "teleport", "userId": "u-b", "groupId": "g", "messageId": "b-2"},
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


# Segment's HTTP API documentation, verbatim -------------------------------------------------
#
# The request bodies of the examples in Segment's "HTTP API Source" page
# (segmentio/segment-docs, src/connections/sources/catalog/libraries/server/
# http-api/index.md: "writeKey authentication" and the examples of Identify,
# Track, Page, Screen, Group, Alias and Batch). None has a messageId; each
# authenticates with the writeKey in its body. The OAuth example is left out:
# Pulse takes no OAuth tokens.

DOCS_WRITE_KEYS = ["YOUR_WRITE_KEY", "DmBXIN4JnwqBnTqXccTF0wBnLXNQmFtk"]

DOCS_EXAMPLES: list[tuple[str, str]] = [
    (
        "/v1/track",
        """{
      "event": "happy-path-a3ef8a6f-0482-4694-bc4d-4afba03a0eab",
      "email": "test@example.org",
      "userId": "123",
      "writeKey": "DmBXIN4JnwqBnTqXccTF0wBnLXNQmFtk"
  }""",
    ),
    (
        "/v1/identify",
        """{
  "userId": "019mr8mf4r",
  "traits": {
    "email": "pgibbons@example.com",
    "name": "Peter Gibbons",
    "industry": "Technology"
  },
  "context": {
    "ip": "24.5.68.47"
  },
  "timestamp": "2012-12-02T00:30:08.276Z",
  "writeKey": "YOUR_WRITE_KEY"
}""",
    ),
    (
        "/v1/track",
        """{
  "userId": "019mr8mf4r",
  "event": "Item Purchased",
  "properties": {
    "name": "Leap to Conclusions Mat",
    "revenue": 14.99
  },
  "context": {
    "ip": "24.5.68.47"
  },
  "timestamp": "2012-12-02T00:30:12.984Z",
  "writeKey": "YOUR_WRITE_KEY"
}""",
    ),
    (
        "/v1/page",
        """{
  "userId": "019mr8mf4r",
  "name": "Tracking HTTP API",
  "timestamp": "2012-12-02T00:31:29.738Z",
  "writeKey": "YOUR_WRITE_KEY"
}""",
    ),
    (
        "/v1/screen",
        """{
  "userId": "019mr8mf4r",
  "name": "Tracking HTTP API",
  "timestamp": "2012-12-02T00:31:29.738Z",
  "writeKey": "YOUR_WRITE_KEY"
}""",
    ),
    (
        "/v1/group",
        """{
  "userId": "019mr8mf4r",
  "groupId": "8e9df332ac",
  "traits": {
    "name": "Initech",
    "industry": "Technology",
    "employees": 420
  },
  "timestamp": "2012-12-02T00:31:38.208Z",
  "writeKey": "YOUR_WRITE_KEY"
}""",
    ),
    (
        "/v1/alias",
        """{
  "previousId": "39239-239239-239239-23923",
  "userId": "019mr8mf4r",
  "timestamp": "2012-12-02T00:31:29.738Z",
  "writeKey": "YOUR_WRITE_KEY"
}""",
    ),
    (
        "/v1/batch",
        """{
  "batch": [
    {
      "type": "identify",
      "userId": "019mr8mf4r",
      "traits": {
        "email": "jake@yahoo.com",
        "name": "Jake Peterson",
        "age": 26
      },
      "timestamp": "2012-12-02T00:30:08.276Z"
    },
    {
      "type": "track",
      "userId": "019mr8mf4r",
      "event": "Song Played",
      "properties": {
        "name": "Fallin for You",
        "artist": "Dierks Bentley"
      },
      "timestamp": "2012-12-02T00:30:12.984Z"
    },
    {
      "type": "identify",
      "userId": "971mj8mk7p",
      "traits": {
        "email": "cindy@example.com",
        "name": "Cindy Gonzalez",
        "age": 23
      },
      "timestamp": "2015-2-02T00:30:08.276Z"
    },
    {
      "type": "track",
      "userId": "971mj8mk7p",
      "event": "Song Played",
      "properties": {
        "name": "Get Right",
        "artist": "Jennifer Lopez"
      },
      "timestamp": "2015-2-02T00:30:12.984Z"
    }
  ],
  "writeKey": "YOUR_WRITE_KEY",
  "context": {
    "device": {
      "type": "phone",
      "name": "Apple iPhone 6"
    }
  }
}""",
    ),
]


@pytest.fixture
def docs_settings(pulse_settings: Settings) -> Settings:
    return load_settings(
        environ=pulse_settings.as_environ(), write_keys=DOCS_WRITE_KEYS, read_keys=["docs-read"]
    )


def test_the_curl_examples_of_segments_http_api_docs_are_accepted(
    docs_settings: Settings,
) -> None:
    with Server(docs_settings) as running, httpx.Client(base_url=running.url) as http:
        answers = [
            http.post(path, content=body, headers={"Content-Type": "application/json"})
            for path, body in DOCS_EXAMPLES
        ]
    for (path, _), answer in zip(DOCS_EXAMPLES, answers, strict=True):
        assert answer.status_code == 200, (path, answer.text)
        assert answer.json()["success"] is True
    assert answers[-1].json()["accepted"] == 4
    events = [e for _, e in stored_events(docs_settings, 11).values()]
    assert len(events) == 11
    # Each call's own time, read as Segment reads it ("2015-2-02" included);
    # the first example has none: it happened when Pulse received it.
    times = sorted((e["type"], e["timestamp"][:23]) for e in events if e["customer_id"] != "123")
    assert times == [
        ("alias", "2012-12-02T00:31:29.738"),
        ("custom", "2012-12-02T00:30:12.984"),
        ("custom", "2012-12-02T00:30:12.984"),
        ("custom", "2015-02-02T00:30:12.984"),
        ("group", "2012-12-02T00:31:38.208"),
        ("identify", "2012-12-02T00:30:08.276"),
        ("identify", "2012-12-02T00:30:08.276"),
        ("identify", "2015-02-02T00:30:08.276"),
        ("page_view", "2012-12-02T00:31:29.738"),
        ("page_view", "2012-12-02T00:31:29.738"),
    ]
    [first] = [e for e in events if e["customer_id"] == "123"]
    assert first["type"] == "custom" and first["timestamp"] == first["received_at"]
    assert all(e["event_id"].startswith("auto-") and e["received_at"] for e in events)
    alias = next(e for e in events if e["type"] == "alias")
    assert (alias["customer_id"], alias["anonymous_id"]) == (
        "019mr8mf4r",
        "39239-239239-239239-23923",
    )
    group = next(e for e in events if e["type"] == "group")
    assert group["group_id"] == "8e9df332ac"
    assert group["traits"] == {"name": "Initech", "industry": "Technology", "employees": 420}


# Refused calls stay in sight ----------------------------------------------------------------


def test_refused_calls_are_dead_lettered_with_their_reason_and_counted(
    server: Server, keyed_settings: Settings
) -> None:
    bad_alias = b'{"type": "alias", "userId": "u-r", "messageId": "r-2"}'
    bad_order = (
        b'{"type": "track", "userId": "u-r", "event": "Order Completed",'
        b' "properties": {"total": 5}}'
    )
    good = b'{"type": "track", "userId": "u-r", "event": "Cart Viewed", "messageId": "r-1"}'
    calls = b", ".join((good, bad_alias, bad_order))
    body = b'{"batch": [' + calls + b'], "sentAt": "2024-05-01T10:00:00Z"}'
    auth = (WRITE_KEY, "")
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, auth=auth, headers=headers) as http:
        batch = http.post("/v1/batch", content=body)
        single = http.post("/v1/group", content=b'{"userId": "u-r"}')
        garbage = http.post("/v1/batch", content=b'{"batch": 5}')
        metrics = http.get("/metrics").text
    assert batch.status_code == 200
    assert [r["status"] for r in batch.json()["results"]] == ["accepted", "rejected", "rejected"]
    assert single.status_code == 422 and single.json()["errors"][0]["field"] == "groupId"
    assert garbage.status_code == 422

    dead = consume(keyed_settings, keyed_settings.events_dlq_topic, 4, timeout_s=20)
    assert len(dead) == 4
    letters: dict[tuple[str, str | None], tuple[dict[str, str], bytes]] = {}
    for record in dead:
        headers_of = {}
        for header in record.headers() or []:
            name, value = header[0], header[1]
            headers_of[name] = value.decode() if isinstance(value, bytes) else str(value)
        letters[(headers_of["pulse.source.route"], headers_of.get("pulse.source.index"))] = (
            headers_of,
            value_of(record),
        )
    alias_headers, alias_raw = letters[("/v1/batch", "1")]
    assert alias_raw == bad_alias  # the call as sent, byte for byte
    assert alias_headers["pulse.source.type"] == "alias"
    assert alias_headers["pulse.reason"] == "previousId: required field missing"
    order_headers, order_raw = letters[("/v1/batch", "2")]
    assert order_raw == bad_order
    assert order_headers["pulse.reason"].startswith("properties.order_id: required")
    group_headers, group_raw = letters[("/v1/group", None)]
    assert group_raw == b'{"userId": "u-r"}' and group_headers["pulse.source.type"] == "group"
    assert "groupId" in group_headers["pulse.reason"]
    batch_headers, batch_raw = letters[("/v1/batch", None)]
    assert batch_raw == b'{"batch": 5}' and batch_headers["pulse.reason"].startswith(
        "invalid batch"
    )
    assert all(float(h["pulse.received_at"]) > 0 for h, _ in letters.values())

    counted = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith("pulse_api_rejected_calls_total{")
    }
    assert counted == {
        'pulse_api_rejected_calls_total{route="/v1/batch",type="alias"}': 1.0,
        'pulse_api_rejected_calls_total{route="/v1/batch",type="track"}': 1.0,
        'pulse_api_rejected_calls_total{route="/v1/group",type="group"}': 1.0,
        'pulse_api_rejected_calls_total{route="/v1/batch",type="unknown"}': 1.0,
    }
    # Only the valid call reached the events topic.
    assert set(stored_events(keyed_settings, 1)) == {"r-1"}


def test_sent_at_corrects_the_clients_clock_and_the_receive_time_is_kept(
    server: Server, keyed_settings: Settings
) -> None:
    """The client's clock runs a day behind: it stamped the call 5 s before sending it."""
    behind = datetime.now(UTC) - timedelta(days=1)
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": "u-s",
                "event": "Cart Viewed",
                "messageId": "s-1",
                "timestamp": (behind - timedelta(seconds=5)).isoformat(),
            }
        ],
        "sentAt": behind.isoformat(),
    }
    before = datetime.now(UTC)
    response = httpx.post(f"{server.url}/v1/batch", json=batch, auth=(WRITE_KEY, ""))
    after = datetime.now(UTC)
    assert response.status_code == 200, response.text
    event = stored_events(keyed_settings, 1)["s-1"][1]
    received = datetime.fromisoformat(event["received_at"])
    assert before <= received <= after
    assert datetime.fromisoformat(event["timestamp"]) == received - timedelta(seconds=5)
