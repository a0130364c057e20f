"""One contract every channel passes: a message sent arrives once, carrying its
idempotency key and payload, and the same key again on a repeat (so the
receiving side can drop the second copy after a dispatcher crash)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from dispatch.channels import (
    Channel,
    EmailChannel,
    InboxChannel,
    LogChannel,
    Message,
    PushChannel,
    SmsChannel,
    WebhookChannel,
)
from pulse.keys import RedisKeys
from pulse.settings import Settings, WebhookEndpoint, load_settings
from pulse.sinks import RecordingServer, SmtpSink, WebhookReceiver
from tests.helpers import json_lines

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# What arrived, as (idempotency key, payload) pairs, read from the receiving side.
Received = Callable[[], list[tuple[str, Any]]]


def _log() -> Iterator[tuple[Channel, Received]]:
    out = io.StringIO()
    yield (
        LogChannel(out),
        lambda: [(r["delivered"], r["payload"]) for r in json_lines(out.getvalue())],
    )


def _webhook() -> Iterator[tuple[Channel, Received]]:
    with WebhookReceiver(SECRET) as receiver:
        channel = WebhookChannel({"default": WebhookEndpoint(url=receiver.url, secret=SECRET)})
        yield (
            channel,
            lambda: [(b["data"]["trigger_id"], b["data"]["payload"]) for b in receiver.bodies()],
        )
        assert receiver.bad_signatures == 0


def _inbox(settings: Settings) -> Iterator[tuple[Channel, Received]]:
    keys = RedisKeys(settings.redis_prefix)
    reader: redis.Redis = redis.Redis.from_url(settings.redis)

    def received() -> list[tuple[str, Any]]:
        raw: list[bytes] = reader.zrange(keys.inbox("c-1"), 0, -1)  # type: ignore[assignment]
        members = [orjson.loads(m) for m in raw]
        return [(m["trigger_id"], m["payload"]) for m in members]

    yield InboxChannel(redis.Redis.from_url(settings.redis), keys), received
    reader.close()


def _email(settings: Settings, directory: Path) -> Iterator[tuple[Channel, Received]]:
    with SmtpSink(directory) as sink:
        settings = load_settings(
            environ=settings.as_environ(),
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            link_secret="contract-test-link-secret",
        )

        def received() -> list[tuple[str, Any]]:
            # The payload is rendered into the text, not carried as data.
            return [(str(m["X-Pulse-Trigger-Id"]), None) for m in sink.messages()]

        yield EmailChannel(settings, redis.Redis.from_url(settings.redis)), received


def _sms(settings: Settings) -> Iterator[tuple[Channel, Received]]:
    with RecordingServer() as provider:
        settings = load_settings(
            environ=settings.as_environ(),
            sms_api_url=provider.url,
            sms_account_sid="AC1",
            sms_auth_token="t",
            sms_from="+15550001111",
            link_secret="contract-test-link-secret",
        )

        def received() -> list[tuple[str, Any]]:
            return [(r["headers"]["i-twilio-idempotency-token"], None) for r in provider.requests]

        yield SmsChannel(settings, redis.Redis.from_url(settings.redis)), received


def _push(settings: Settings) -> Iterator[tuple[Channel, Received]]:
    with RecordingServer() as provider:
        settings = load_settings(
            environ=settings.as_environ(),
            push_api_url=provider.url,
            push_project_id="p1",
            push_auth_token="t",
            link_secret="contract-test-link-secret",
        )

        def received() -> list[tuple[str, Any]]:
            # FCM ignores idempotency headers: the key the app sees is in the data.
            return [(b["message"]["data"]["trigger_id"], None) for b in provider.jsons()]

        yield PushChannel(settings, redis.Redis.from_url(settings.redis)), received


HARNESSES: dict[str, Callable[..., Iterator[tuple[Channel, Received]]]] = {
    "log": _log,
    "webhook": _webhook,
    "in_app": _inbox,
    "email": _email,
    "sms": _sms,
    "push": _push,
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Channel, Received]]:
    if request.param == "in_app":
        made = _inbox(request.getfixturevalue("pulse_settings"))
    elif request.param in ("sms", "push"):
        made = HARNESSES[request.param](request.getfixturevalue("pulse_settings"))
    elif request.param == "email":
        made = _email(request.getfixturevalue("pulse_settings"), tmp_path)
    else:
        made = HARNESSES[request.param]()
    channel, received = next(made)
    yield channel, received
    channel.close()
    with pytest.raises(StopIteration):
        next(made)


def message(key: str = "trigger-1", channel: str = "webhook") -> Message:
    return Message(
        idempotency_key=key,
        rule_id="abandoned_cart",
        customer_id="c-1",
        channel=channel,
        template="abandoned-cart",
        recipient={
            "email": "c-1@example.com",
            "phone": "+447700900123",
            "push_token": "fcm-token-c-1",
        },
        payload={
            "cart_value": 42.5,
            "items": [{"sku": "s-1", "name": "Socks", "quantity": 2}],
            "recommendations": ["s-2"],
        },
        fired_at=1796000000.0,
        priority=50,
    )


def test_a_sent_message_arrives_once_with_its_key_and_payload(
    harness: tuple[Channel, Received],
) -> None:
    channel, received = harness
    outcome = channel.send(message())
    assert outcome.status == "sent", outcome
    [(key, payload)] = received()
    assert key == "trigger-1" and payload in (None, message().payload)


def test_a_repeat_carries_the_same_key_so_the_receiver_can_drop_it(
    harness: tuple[Channel, Received],
) -> None:
    """A channel whose receiver is Pulse's own (the inbox) drops the repeat
    itself; the others hand it over with the same key."""
    channel, received = harness
    assert channel.send(message("k1")).status == "sent"
    assert channel.send(message("k2")).status == "sent"
    assert channel.send(message("k1")).status == "sent"
    keys = [key for key, _ in received()]
    assert set(keys) == {"k1", "k2"} and keys.count("k2") == 1
    assert keys.count("k1") == (1 if channel.name == "in_app" else 2)
