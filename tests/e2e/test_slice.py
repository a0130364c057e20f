"""The foundation slice end to end: dataflow, API and dispatcher as separate processes."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from pulse.rules_files import copy_with_waits
from pulse.settings import Settings, load_settings
from tests.e2e.conftest import get as _get
from tests.e2e.conftest import request as _request
from tests.helpers import consume, produce, produce_events, value_of, wait_for

pytestmark = pytest.mark.e2e

CART_WAIT_S = 3.0


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The shipped abandoned-cart rule and policy alone, waiting seconds instead of 30 minutes."""
    rules = copy_with_waits(
        load_settings(environ={}).rules_dir, tmp_path / "rules", {"abandoned_cart": "3s"}
    )
    for path in rules.glob("*.yaml"):
        if path.name not in ("abandoned_cart.yaml", "policy.yaml", "loyalty.yaml", "rfm.yaml"):
            path.unlink()
    return rules


def test_cart_without_order_fires_one_trigger_and_profile_is_served(
    stack: Settings, tmp_path: Path
) -> None:
    settings = stack
    # Alice can be written to: an address and her consent.
    produce_events(
        settings,
        [
            {
                "type": "identify",
                "event_id": "e-0",
                "customer_id": "alice",
                "traits": {"email": "alice@example.com"},
            },
            {
                "type": "consent_changed",
                "event_id": "e-00",
                "customer_id": "alice",
                "consent_channel": "email",
                "granted": True,
            },
        ],
    )
    wait_for(
        lambda: (
            (r := _get(settings, "/v1/customers/alice/profile"))[0] == 200
            and r[1]["consent"] == {"email": True}
        ),
        20,
        "alice's consent in her profile",
    )
    # Her cart through the collector...
    status, body = _request(
        settings,
        "POST",
        "/v1/events",
        {
            "type": "add_to_cart",
            "event_id": "e-1",
            "customer_id": "alice",
            "sku": "MUG-1",
            "price": 7.5,
            "quantity": 2,
            "name": "Mug",
            "category": "mugs",
        },
    )
    assert status == 202, body
    # ...and produced straight to Kafka; Bob orders, so no trigger for him.
    produce_events(
        settings,
        [
            {
                "type": "add_to_cart",
                "event_id": "e-2",
                "customer_id": "bob",
                "sku": "LAMP-1",
                "price": 20.0,
            },
            {
                "type": "order_placed",
                "event_id": "e-3",
                "customer_id": "bob",
                "order_id": "o-1",
                "total": 20.0,
                "items": [{"sku": "LAMP-1", "price": 20.0}],
            },
        ],
    )
    # Undecodable input goes to the DLQ and does not stop the flow.
    produce(
        settings,
        settings.events_topic,
        [(b"x", b"\xff not json"), (b"y", b'{"type":"add_to_cart"}')],
    )

    profile = wait_for(
        lambda: (r := _get(settings, "/v1/customers/alice/profile"))[0] == 200 and r[1],
        20,
        "alice's profile",
    )
    assert profile["cart_quantity"] == 2
    assert profile["cart_value"] == 15.0
    assert profile["event_counts"]["add_to_cart"] == 1

    bob = wait_for(
        lambda: (
            (r := _get(settings, "/v1/customers/bob/profile"))[0] == 200
            and r[1]["orders"] == 1
            and r[1]
        ),
        20,
        "bob's order in his profile",
    )
    assert bob["revenue"] == 20.0 and bob["cart"] == []

    dispatcher_out = tmp_path / "dispatcher.out"
    deliveries = wait_for(
        lambda: [orjson.loads(line) for line in dispatcher_out.read_text().splitlines()],
        CART_WAIT_S + 20,
        "the abandoned-cart trigger",
    )
    assert [d["customer_id"] for d in deliveries] == ["alice"]
    assert deliveries[0]["rule_id"] == "abandoned_cart"
    assert deliveries[0]["channel"] == "email"
    assert deliveries[0]["recipient"] == {"email": "alice@example.com"}
    assert deliveries[0]["payload"]["cart_value"] == 15.0

    dead = consume(settings, settings.events_dlq_topic, expected=2, timeout_s=20)
    assert sorted(value_of(m) for m in dead) == sorted(
        [b"\xff not json", b'{"type":"add_to_cart"}']
    )
    for m in dead:
        headers = dict(m.headers() or [])
        assert headers["pulse.reason"]
        assert headers["pulse.source.topic"] == settings.events_topic.encode()

    # Bob's cart was ordered: his wait was cancelled, and every decision is on record.
    decisions = [
        orjson.loads(value_of(m)) for m in consume(settings, settings.decisions_topic, 4, 20)
    ]
    outcomes = sorted((d["customer_id"], d["outcome"], d.get("reason", "")) for d in decisions)
    assert outcomes == [
        ("alice", "entered", ""),
        ("alice", "fired", ""),
        ("bob", "cancelled", "order_placed"),
        ("bob", "entered", ""),
    ]
    time.sleep(1.5)
    lines = dispatcher_out.read_text().splitlines()
    assert len(lines) == 1, lines
