"""Erasure and export through the real processes; a replay cannot resurrect the customer."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from pulse.settings import Settings
from tests.e2e.conftest import get, request
from tests.helpers import produce_events, wait_for

pytestmark = pytest.mark.e2e

HISTORY: list[dict[str, Any]] = [
    {
        "type": "page_view",
        "event_id": "h1",
        "anonymous_id": "dev-1",
        "timestamp": "2026-11-01T10:00:00Z",
    },
    {
        "type": "add_to_cart",
        "event_id": "h2",
        "anonymous_id": "dev-1",
        "sku": "MUG",
        "price": 9.0,
        "category": "mugs",
        "timestamp": "2026-11-01T10:01:00Z",
    },
    {
        "type": "identify",
        "event_id": "h3",
        "customer_id": "erin",
        "anonymous_id": "dev-1",
        "traits": {"email": "erin@example.com"},
        "timestamp": "2026-11-01T10:02:00Z",
    },
    {
        "type": "order_placed",
        "event_id": "h4",
        "customer_id": "erin",
        "order_id": "o1",
        "total": 9.0,
        "timestamp": "2026-11-01T10:03:00Z",
    },
]

MERGED_TYPES = ("page_view", "add_to_cart", "identify", "order_placed")


def test_export_then_erase_and_replay_does_not_resurrect(stack: Settings) -> None:
    settings = stack
    produce_events(settings, HISTORY)
    profile = (
        wait_for(
            lambda: (
                (r := get(settings, "/v1/customers/erin/profile"))[0] == 200
                and r[1]["orders"] == 1
                and all(r[1]["event_counts"].get(t) == 1 for t in MERGED_TYPES)
                and r[1]
            ),
            30,
            "erin's merged profile",
        )
        if True
        else None
    )
    print(
        get(settings, "/v1/customers/erin/profile"),
        get(settings, "/v1/customers/anon:dev-1/profile"),
    )
    assert profile["anonymous_ids"] == ["dev-1"]
    assert profile["cart"] == []  # the anonymous cart was bought by the later order
    assert "repeat_buyer" not in profile["segments"] and "first_time_buyer" in profile["segments"]

    status, export = get(settings, "/v1/customers/erin/export")
    assert status == 200
    assert export["profile"]["traits"]["email"] == "erin@example.com"
    assert export["redis_keys"] == [
        f"{settings.redis_prefix}:{{erin}}:profile",
        f"{settings.redis_prefix}:{{erin}}:emails",
    ]
    # Found by her e-mail address, in any case.
    status, found = get(settings, "/v1/customers?email=Erin@Example.com")
    assert status == 200 and found["customer_ids"] == ["erin"], found

    client: redis.Redis = redis.Redis.from_url(settings.redis, decode_responses=True)
    segment = f"{settings.redis_prefix}:segment:first_time_buyer"
    wait_for(lambda: client.sismember(segment, "erin"), 10, "segment membership")

    status, body = request(settings, "DELETE", "/v1/customers/erin")
    assert status == 202, body
    assert body["anonymous_ids"] == ["dev-1"]
    assert get(settings, "/v1/customers/erin/profile")[0] == 404
    wait_for(lambda: not client.sismember(segment, "erin"), 15, "erin out of her segments")
    # Out of the e-mail index too: no key names her any more.
    wait_for(
        lambda: not client.exists(f"{settings.redis_prefix}:{{erin}}:emails"),
        15,
        "erin out of the e-mail index",
    )
    assert not [k for k in client.scan_iter(f"{settings.redis_prefix}:email:*")
                if client.sismember(k, "erin")]  # fmt: skip
    assert get(settings, "/v1/customers?email=erin@example.com")[1]["customer_ids"] == []

    # Replay her history (a backfill, a consumer reset): nothing comes back.
    produce_events(settings, [{**e, "event_id": e["event_id"] + "-replayed"} for e in HISTORY])
    produce_events(settings, [{"type": "page_view", "event_id": "marker", "customer_id": "zed"}])
    wait_for(lambda: get(settings, "/v1/customers/zed/profile")[0] == 200, 20, "the marker")
    assert get(settings, "/v1/customers/erin/profile")[0] == 404
    assert get(settings, "/v1/customers/anon:dev-1/profile")[0] == 404
    assert not client.sismember(segment, "erin")

    # New activity after the erasure starts a fresh profile.
    produce_events(settings, [{"type": "page_view", "event_id": "new", "customer_id": "erin"}])
    fresh = wait_for(
        lambda: (r := get(settings, "/v1/customers/erin/profile"))[0] == 200 and r[1],
        20,
        "erin's fresh profile",
    )
    assert fresh["events_total"] == 1 and fresh["orders"] == 0 and fresh["traits"] == {}


def test_profile_and_erasure_need_a_read_key(stack: Settings) -> None:
    from tests.e2e.conftest import WRITE_KEY

    assert request(stack, "GET", "/v1/customers/x/profile", key=WRITE_KEY)[0] == 403
    assert request(stack, "DELETE", "/v1/customers/x", key=WRITE_KEY)[0] == 403
    assert request(stack, "GET", "/v1/customers/x/profile", key="nope")[0] == 401
