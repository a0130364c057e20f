"""E-mail through a real SMTP server process (aiosmtpd), read back from its Maildir."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from dispatch.channels import EmailChannel, Message
from engine.customer import Engine
from engine.decode import event_decoder
from engine.profile import encode_view, profile_view
from pulse import links
from pulse.keys import RedisKeys
from pulse.settings import Settings, load_settings
from pulse.sinks import SmtpSink

LINK_SECRET = "email-test-link-secret"

# A payload of each shipped template's shape (see the rules' action.payload).
PAYLOADS: dict[str, dict[str, Any]] = {
    "abandoned-cart": {
        "items": [{"sku": "s-1", "name": "Wool socks", "quantity": 2, "price": 9.5}],
        "cart_value": 19.0,
        "recommendations": ["s-7", "s-9"],
    },
    "browse-abandonment": {"sku": "s-3", "name": "Rain jacket", "recommendations": ["s-4"]},
    "tier-upgrade": {"tier": "gold", "previous_tier": "silver", "points": 1200},
    "near-next-tier": {"next_tier": "gold", "missing": 42.5},
    "win-back": {"days_away": 61.2, "favourites": ["s-1"]},
    "welcome": {"first_name": "Ada"},
    "review-request": {"order_id": "o-17", "skus": ["s-1", "s-2"]},
    "birthday": {"first_name": "Ada", "tier": "gold"},
    "store-event-invitation": {
        "event_name": "Winter market",
        "event_date": "2026-12-12",
        "postcode": "75002",
    },
    "replenishment": {"categories": ["coffee"], "last_order": "o-18"},
    "points-expiring": {"points": 300, "expire_at": 1796083200.0},
}


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path) as running:
        yield running


@pytest.fixture
def channel(pulse_settings: Settings, sink: SmtpSink) -> Iterator[EmailChannel]:
    settings = load_settings(
        environ=pulse_settings.as_environ(),
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        link_secret=LINK_SECRET,
        email_from="Shop <news@shop.example>",
        public_url="https://pulse.shop.example",
    )
    made = EmailChannel(settings, redis.Redis.from_url(settings.redis))
    yield made
    made.close()


def message(template: str, customer_id: str = "c-ada", **extra: Any) -> Message:
    return Message(
        idempotency_key=f"trig-{template}",
        rule_id=template.replace("-", "_"),
        customer_id=customer_id,
        channel="email",
        template=template,
        recipient={"email": "ada@example.com"},
        payload={**PAYLOADS[template], **extra},
    )


def store_profile(settings: Settings, customer_id: str, first_name: str) -> None:
    """A served profile, as the dataflow writes it (dataflows/redis_sink.py)."""
    identify = event_decoder.decode(
        msgspec.json.encode(
            {
                "type": "identify",
                "event_id": "i-1",
                "customer_id": customer_id,
                "timestamp": datetime.now(UTC).isoformat(),
                "traits": {"first_name": first_name, "email": "ada@example.com"},
            }
        )
    )
    state, _ = Engine().apply(None, identify)
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    client.hset(
        RedisKeys(settings.redis_prefix).profile(customer_id),
        "view",
        encode_view(profile_view(state)),
    )
    client.close()


def test_a_cart_reminder_arrives_personalised_in_two_parts_with_one_click_unsubscribe(
    channel: EmailChannel, sink: SmtpSink
) -> None:
    store_profile(channel.settings, "c-ada", "Ada")
    outcome = channel.send(message("abandoned-cart"))
    assert outcome.status == "sent", outcome
    [mail] = sink.messages()
    assert mail["Subject"] == "You left 1 item in your cart"
    assert mail["From"] == "Shop <news@shop.example>" and mail["To"] == "ada@example.com"
    assert mail["Message-ID"] == "<trig-abandoned-cart@shop.example>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Hi Ada," in text and "2 x Wool socks" in text and "19.00" in text
    assert "<p>Hi Ada,</p>" in html and "2 &times; Wool socks" in html
    unsubscribe = str(mail["List-Unsubscribe"]).strip("<>")
    assert unsubscribe.startswith("https://pulse.shop.example/v1/u/")
    claims = links.verify(unsubscribe.rsplit("/", 1)[1], LINK_SECRET)
    assert (claims.customer_id, claims.trigger_id, claims.channel) == (
        "c-ada",
        "trig-abandoned-cart",
        "email",
    )
    tracked = [line.split(": ", 1)[1] for line in text.splitlines() if "s-7:" in line]
    assert links.verify(tracked[0].rsplit("/", 1)[1], LINK_SECRET).url == (
        "https://shop.example/p/s-7"
    )


@pytest.mark.parametrize("template", sorted(PAYLOADS))
def test_every_shipped_template_renders_subject_text_and_html(
    channel: EmailChannel, template: str
) -> None:
    mail = channel.compose(message(template), "ada@example.com")
    assert str(mail["Subject"]).strip() and "{" not in str(mail["Subject"])
    assert "Unsubscribe" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert mail.get_body(("html",)) is not None


def bare(template: str, payload: dict[str, Any], recipient: dict[str, str]) -> Message:
    return Message(
        idempotency_key=f"t-{template}-{len(recipient)}",
        rule_id="r",
        customer_id="c",
        channel="email",
        template=template,
        recipient=recipient,
        payload=payload,
    )


def test_a_template_mistake_or_a_missing_address_fails_for_good_with_the_reason(
    channel: EmailChannel, sink: SmtpSink
) -> None:
    address = {"email": "a@example.com"}
    missing = channel.send(bare("no-such-template", {}, address))
    assert missing.status == "failed"
    assert "no template no-such-template.subject.j2" in missing.detail
    # previous_tier and points missing from the payload:
    typo = channel.send(bare("tier-upgrade", {"tier": "gold"}, address))
    assert typo.status == "failed" and "is undefined" in typo.detail
    no_address = channel.send(bare("welcome", {"first_name": ""}, {}))
    assert no_address.status == "failed" and "no e-mail address" in no_address.detail
    assert channel.send(message("welcome")).status == "sent"
    assert len(sink.messages()) == 1


def test_an_smtp_server_that_is_down_is_a_retriable_failure(pulse_settings: Settings) -> None:
    settings = load_settings(
        environ=pulse_settings.as_environ(),
        smtp_host="127.0.0.1",
        smtp_port=9,
        smtp_timeout_s=2,
        link_secret=LINK_SECRET,
    )
    channel = EmailChannel(settings, redis.Redis.from_url(settings.redis))
    try:
        outcome = channel.send(message("welcome"))
    finally:
        channel.close()
    assert outcome.status == "retry" and "127.0.0.1:9" in outcome.detail
