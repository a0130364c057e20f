"""SMS through a Twilio-shaped API, against a real HTTP server that records requests."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from dispatch.channels import Message, SmsChannel
from pulse.settings import Settings, load_settings
from pulse.sinks import RecordingServer

PAYLOADS: dict[str, dict[str, Any]] = {
    "abandoned-cart": {"items": [{"sku": "s-1"}], "cart_value": 19.0},
    "browse-abandonment": {"sku": "s-3", "name": "Rain jacket"},
    "tier-upgrade": {"tier": "gold"},
    "near-next-tier": {"next_tier": "gold", "missing": 42.5},
    "win-back": {},
    "welcome": {"first_name": "Ada"},
    "review-request": {"order_id": "o-17"},
    "birthday": {"first_name": "Ada"},
    "store-event-invitation": {"event_name": "Winter market", "event_date": "2026-12-12"},
    "replenishment": {"categories": ["coffee"], "last_order": "o-18"},
    "points-expiring": {"points": 300, "expire_at": 1796083200.0},
}


def sms_settings(base: Settings, url: str) -> Settings:
    return load_settings(
        environ=base.as_environ(),
        sms_api_url=url,
        sms_account_sid="AC123",
        sms_auth_token="token-456",
        sms_from="+15550001111",
        link_secret="sms-test-link-secret",
    )


@pytest.fixture
def provider() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture
def channel(pulse_settings: Settings, provider: RecordingServer) -> Iterator[SmsChannel]:
    settings = sms_settings(pulse_settings, provider.url)
    made = SmsChannel(settings, redis.Redis.from_url(settings.redis))
    yield made
    made.close()


def message(template: str, phone: str | None = "+447700900123", key: str = "trig-1") -> Message:
    return Message(
        idempotency_key=key,
        rule_id=template.replace("-", "_"),
        customer_id="c-ada",
        channel="sms",
        template=template,
        recipient={"phone": phone} if phone else {},
        payload=PAYLOADS[template],
    )


def test_a_text_goes_to_the_provider_as_twilio_expects_it(
    channel: SmsChannel, provider: RecordingServer
) -> None:
    assert channel.send(message("welcome")).status == "sent"
    [request] = provider.requests
    assert request["path"] == "/2010-04-01/Accounts/AC123/Messages.json"
    assert request["headers"]["i-twilio-idempotency-token"] == "trig-1"
    assert (
        request["headers"]["authorization"]
        == "Basic " + base64.b64encode(b"AC123:token-456").decode()
    )
    assert provider.forms() == [
        {
            "To": "+447700900123",
            "From": "+15550001111",
            "Body": "Welcome, Ada! Thanks for joining us. Reply STOP to opt out.",
        }
    ]


@pytest.mark.parametrize("template", sorted(PAYLOADS))
def test_every_shipped_template_renders_as_one_line(
    channel: SmsChannel, provider: RecordingServer, template: str
) -> None:
    assert channel.send(message(template)).status == "sent"
    body = provider.forms()[-1]["Body"]
    assert "\n" not in body and "{" not in body and len(body) <= 1600


def test_provider_answers_classify_like_every_http_channel(pulse_settings: Settings) -> None:
    with RecordingServer(statuses=[503, 429, 400]) as provider:
        settings = sms_settings(pulse_settings, provider.url)
        channel = SmsChannel(settings, redis.Redis.from_url(settings.redis))
        try:
            outcomes = [channel.send(message("welcome")) for _ in range(4)]
            no_phone = channel.send(message("welcome", phone=None))
        finally:
            channel.close()
    assert [o.status for o in outcomes] == ["retry", "retry", "failed", "sent"]
    assert outcomes[2].detail.startswith("sms: HTTP 400")
    assert no_phone.status == "failed" and "no phone number" in no_phone.detail
    assert len(provider.requests) == 4  # nothing sent without a number
