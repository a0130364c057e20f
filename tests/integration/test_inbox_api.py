"""In-app messages: delivered by the dispatcher's inbox channel into Redis,
read by the site through the API, exported and erased with the customer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from dispatch.channels import InboxChannel, Message
from dispatch.channels.inbox import MAX_MESSAGES
from pulse.keys import RedisKeys
from pulse.settings import Settings


@pytest.fixture
def api(pulse_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(pulse_settings)) as client:
        yield client


def deliver(settings: Settings, customer_id: str, n: int, fired_at: float) -> None:
    channel = InboxChannel(redis.Redis.from_url(settings.redis), RedisKeys(settings.redis_prefix))
    try:
        outcome = channel.send(
            Message(
                idempotency_key=f"t-{n}",
                rule_id="points_expiring",
                customer_id=customer_id,
                channel="in_app",
                template="points-expiring",
                recipient={},
                payload={"points": n},
                fired_at=fired_at,
            )
        )
        assert outcome.status == "sent", outcome
    finally:
        channel.close()


def test_the_inbox_lists_messages_newest_first_once_each(
    api: TestClient, pulse_settings: Settings
) -> None:
    deliver(pulse_settings, "c-9", 1, 1000.0)
    deliver(pulse_settings, "c-9", 2, 2000.0)
    deliver(pulse_settings, "c-9", 1, 1000.0)  # the same trigger again
    body = api.get("/v1/customers/c-9/inbox").json()
    assert body["customer_id"] == "c-9"
    assert [(m["trigger_id"], m["payload"], m["fired_at"]) for m in body["messages"]] == [
        ("t-2", {"points": 2}, 2000.0),
        ("t-1", {"points": 1}, 1000.0),
    ]
    assert api.get("/v1/customers/nobody/inbox").json() == {
        "customer_id": "nobody",
        "messages": [],
    }


def test_the_inbox_keeps_the_newest_messages(api: TestClient, pulse_settings: Settings) -> None:
    for n in range(MAX_MESSAGES + 5):
        deliver(pulse_settings, "c-10", n, float(n))
    messages = api.get("/v1/customers/c-10/inbox").json()["messages"]
    assert len(messages) == MAX_MESSAGES and messages[0]["trigger_id"] == f"t-{MAX_MESSAGES + 4}"


def test_the_inbox_is_exported_and_erased_with_the_customer(
    api: TestClient, pulse_settings: Settings
) -> None:
    deliver(pulse_settings, "c-11", 1, 1000.0)
    export = api.get("/v1/customers/c-11/export").json()
    inbox_key = RedisKeys(pulse_settings.redis_prefix).inbox("c-11")
    assert [m["trigger_id"] for m in export["inbox"]] == ["t-1"]
    assert inbox_key in export["redis_keys"]
    assert api.delete("/v1/customers/c-11").status_code == 202
    assert api.get("/v1/customers/c-11/inbox").json()["messages"] == []
