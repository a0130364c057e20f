"""Push through an FCM-shaped API, against a real HTTP server that records requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from dispatch.channels import Message, PushChannel
from pulse.settings import Settings, load_settings
from pulse.sinks import RecordingServer, Reply
from tests.integration.test_sms_channel import PAYLOADS


def push_settings(base: Settings, url: str, **overrides: Any) -> Settings:
    return load_settings(
        environ=base.as_environ(),
        push_api_url=url,
        push_project_id="shop-app",
        push_auth_token="ya29.test-token",
        link_secret="push-test-link-secret",
        **overrides,
    )


def fcm_error(status: int, code: str, text: str, headers: dict[str, str] | None = None) -> Reply:
    """An error answer as FCM HTTP v1 gives it."""
    body = {
        "error": {
            "code": status,
            "message": text,
            "status": "NOT_FOUND" if status == 404 else code,
            "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
            ],
        }
    }
    return Reply(status, json.dumps(body).encode(), headers or {})


@pytest.fixture
def provider() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture
def channel(pulse_settings: Settings, provider: RecordingServer) -> Iterator[PushChannel]:
    settings = push_settings(pulse_settings, provider.url)
    made = PushChannel(settings, redis.Redis.from_url(settings.redis))
    yield made
    made.close()


def message(template: str, token: str | None = "fcm-token-ada", key: str = "trig-1") -> Message:
    return Message(
        idempotency_key=key,
        rule_id=template.replace("-", "_"),
        customer_id="c-ada",
        channel="push",
        template=template,
        recipient={"push_token": token} if token else {"email": "ada@example.com"},
        payload=PAYLOADS[template],
    )


def test_a_notification_goes_to_the_provider_as_fcm_expects_it(
    channel: PushChannel, provider: RecordingServer
) -> None:
    assert channel.send(message("welcome")).status == "sent"
    [request] = provider.requests
    assert request["path"] == "/v1/projects/shop-app/messages:send"
    assert request["headers"]["authorization"] == "Bearer ya29.test-token"
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-idempotency-key"] == "trig-1"
    assert provider.jsons() == [
        {
            "message": {
                "token": "fcm-token-ada",
                "notification": {"title": "Welcome, Ada!", "body": "Thanks for joining us."},
                "data": {"trigger_id": "trig-1", "rule_id": "welcome", "template": "welcome"},
            }
        }
    ]


@pytest.mark.parametrize("template", sorted(PAYLOADS))
def test_every_shipped_template_renders_a_title_and_a_body(
    channel: PushChannel, provider: RecordingServer, template: str
) -> None:
    assert channel.send(message(template)).status == "sent"
    sent = provider.jsons()[-1]["message"]
    title, body = sent["notification"]["title"], sent["notification"]["body"]
    for text, limit in ((title, 100), (body, 800)):
        assert text and "\n" not in text and "{" not in text and len(text) <= limit, text
    assert all(isinstance(v, str) for v in sent["data"].values())  # FCM takes strings only
    assert len(json.dumps(sent).encode()) <= 4096


def test_provider_answers_classify_with_fcm_reasons(pulse_settings: Settings) -> None:
    answers = [
        fcm_error(404, "UNREGISTERED", "Requested entity was not found."),
        fcm_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM token"),
        Reply(500, b"upstream broke"),
        fcm_error(429, "QUOTA_EXCEEDED", "Quota exceeded.", {"retry-after": "7"}),
        fcm_error(503, "UNAVAILABLE", "The server is overloaded."),
    ]
    with RecordingServer(statuses=answers) as provider:
        settings = push_settings(pulse_settings, provider.url)
        channel = PushChannel(settings, redis.Redis.from_url(settings.redis))
        try:
            outcomes = [channel.send(message("welcome")) for _ in range(6)]
            no_token = channel.send(message("welcome", token=None))
        finally:
            channel.close()
    assert [o.status for o in outcomes] == ["failed", "failed", "retry", "retry", "retry", "sent"]
    assert outcomes[0].detail == (
        "push: HTTP 404 UNREGISTERED: the device token is no longer registered "
        "(app uninstalled or token expired)"
    )
    assert outcomes[1].detail == (
        "push: HTTP 400 INVALID_ARGUMENT: The registration token is not a valid FCM token"
    )
    assert outcomes[2].detail == "push: HTTP 500 upstream broke"  # not FCM's shape: as is
    assert outcomes[3].detail == "push: HTTP 429 QUOTA_EXCEEDED: Quota exceeded."
    assert outcomes[3].retry_after_s == 7.0
    assert no_token.status == "failed" and "no push token" in no_token.detail
    assert len(provider.requests) == 6  # nothing sent without a token


def test_the_circuit_opens_for_a_failing_provider(pulse_settings: Settings) -> None:
    with RecordingServer(statuses=[503, 503]) as provider:
        settings = push_settings(pulse_settings, provider.url, breaker_failures=2)
        channel = PushChannel(settings, redis.Redis.from_url(settings.redis))
        try:
            outcomes = [channel.send(message("welcome")) for _ in range(3)]
        finally:
            channel.close()
    assert [o.status for o in outcomes] == ["retry", "retry", "retry"]
    assert outcomes[2].detail == "push: circuit open for the provider"
    assert outcomes[2].retry_after_s and outcomes[2].retry_after_s > 0
    assert len(provider.requests) == 2  # the open circuit sent nothing


def test_a_missing_template_fails_naming_it(
    channel: PushChannel, provider: RecordingServer
) -> None:
    missing = Message(
        idempotency_key="trig-2",
        rule_id="r",
        customer_id="c-ada",
        channel="push",
        template="no-such-template",
        recipient={"push_token": "fcm-token-ada"},
        payload={},
    )
    outcome = channel.send(missing)
    assert outcome.status == "failed"
    assert outcome.detail.startswith("push: no template no-such-template.title.j2 in ")
    assert provider.requests == []
