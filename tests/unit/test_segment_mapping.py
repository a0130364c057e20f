"""Segment calls to Pulse events: the mapping alone, then Pulse's own validation."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.segment import (
    Mapped,
    SegmentError,
    derived_message_id,
    normalise_event_name,
    to_pulse,
)
from engine.decode import DeadLetter, decode_event
from engine.events import (
    AddToCart,
    BaseEvent,
    CartViewed,
    CheckoutStarted,
    Custom,
    Identify,
    OrderPlaced,
    OrderRefunded,
    PageView,
    ProductView,
    RemoveFromCart,
    Search,
)


def call(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "messageId": "m-1", "userId": "u-1", **fields}


def track(event: str, **properties: Any) -> dict[str, Any]:
    return call("track", event=event, properties=properties)


def pulse(message: dict[str, Any]) -> BaseEvent:
    """Map and validate as the API does; the result must be a valid Pulse event."""
    decoded = decode_event(msgspec.json.encode(to_pulse(message).event), 0.0)
    assert not isinstance(decoded, DeadLetter), decoded.reason
    return decoded


def test_common_fields_map_to_the_base_event() -> None:
    event = pulse(
        call(
            "track",
            event="Product Viewed",
            anonymousId="a-1",
            timestamp="2024-05-01T10:00:00.000Z",
            properties={"product_id": "P-1"},
            context={
                "ip": "203.0.113.9",
                "userAgent": "Mozilla/5.0",
                "locale": "de-DE",
                "timezone": "Europe/Berlin",
                "library": {"name": "analytics-python", "version": "2.4.0"},
            },
        )
    )
    assert event.event_id == "m-1"
    assert (event.customer_id, event.anonymous_id) == ("u-1", "a-1")
    assert (
        event.timestamp is not None and event.timestamp.isoformat() == "2024-05-01T10:00:00+00:00"
    )
    assert event.channel == "web"
    assert event.context is not None
    assert (event.context.ip, event.context.user_agent) == ("203.0.113.9", "Mozilla/5.0")
    assert (event.context.locale, event.context.timezone) == ("de-DE", "Europe/Berlin")


def test_original_timestamp_is_used_without_timestamp() -> None:
    message = call("identify", originalTimestamp="2024-05-01T10:00:00+02:00")
    assert to_pulse(message).event["timestamp"] == "2024-05-01T10:00:00+02:00"
    assert "timestamp" not in to_pulse(call("identify")).event  # the collector fills it in


def test_anonymous_only_calls_are_fine() -> None:
    event = pulse({"type": "page", "messageId": "m", "anonymousId": "a-9"})
    assert event.customer_id is None and event.customer_key == "anon:a-9"


def test_product_viewed() -> None:
    event = pulse(
        track(
            "Product Viewed",
            product_id="P-1",
            sku="SKU-1",
            category="shoes",
            price=59.9,
            name="Runner",
        )
    )
    assert event == ProductView(
        event_id="m-1",
        customer_id="u-1",
        timestamp=event.timestamp,
        sku="P-1",
        category="shoes",
        price=59.9,
        name="Runner",
    )


def test_sku_is_the_fallback_for_product_id() -> None:
    event = pulse(track("Product Viewed", sku="SKU-1"))
    assert isinstance(event, ProductView) and event.sku == "SKU-1"


def test_product_added_and_removed() -> None:
    added = pulse(
        track("Product Added", product_id="P-1", price=10, quantity=3, category="c", name="n")
    )
    assert isinstance(added, AddToCart)
    assert (added.sku, added.price, added.quantity, added.category, added.name) == (
        "P-1",
        10,
        3,
        "c",
        "n",
    )
    removed = pulse(track("Product Removed", product_id="P-1", quantity=1))
    assert isinstance(removed, RemoveFromCart) and (removed.sku, removed.quantity) == ("P-1", 1)
    whole_line = pulse(track("Product Removed", sku="P-1"))
    assert isinstance(whole_line, RemoveFromCart) and whole_line.quantity is None


def test_cart_viewed_and_checkout_started() -> None:
    assert isinstance(pulse(track("Cart Viewed", cart_id="k")), CartViewed)
    for properties, value in [
        ({"value": 30, "revenue": 20, "total": 10}, 30),
        ({"revenue": 20, "total": 10}, 20),
        ({"total": 10}, 10),
        ({"value": 0, "total": 10}, 0),
        ({}, None),
    ]:
        event = pulse(track("Checkout Started", **properties))
        assert isinstance(event, CheckoutStarted) and event.value == value, properties


def test_order_completed_with_products() -> None:
    event = pulse(
        track(
            "Order Completed",
            order_id="O-1",
            total=70.5,
            revenue=60,
            currency="usd",
            products=[
                {
                    "product_id": "P-1",
                    "sku": "S-1",
                    "category": "shoes",
                    "price": 30,
                    "quantity": 2,
                },
                {"sku": "S-2", "price": 10.5, "name": "Socks"},
            ],
        )
    )
    assert isinstance(event, OrderPlaced)
    assert (event.order_id, event.total, event.currency) == ("O-1", 70.5, "USD")
    assert [(i.sku, i.price, i.quantity, i.category, i.name) for i in event.items] == [
        ("P-1", 30, 2, "shoes", None),
        ("S-2", 10.5, 1, None, "Socks"),
    ]


def test_order_total_falls_back_to_revenue() -> None:
    event = pulse(track("Order Completed", order_id="O-1", revenue=60))
    assert isinstance(event, OrderPlaced) and event.total == 60 and event.items == ()


def test_order_refunded() -> None:
    full = pulse(track("Order Refunded", order_id="O-1"))
    assert isinstance(full, OrderRefunded) and full.amount is None
    partial = pulse(track("Order Refunded", order_id="O-1", total=5))
    assert isinstance(partial, OrderRefunded) and partial.amount == 5


def test_products_searched() -> None:
    event = pulse(track("Products Searched", query="blue shoes"))
    assert isinstance(event, Search) and event.query == "blue shoes"


@pytest.mark.parametrize(
    "name", ["Order Completed", "order_completed", "ORDER COMPLETED", " Order   Completed "]
)
def test_event_names_are_matched_loosely(name: str) -> None:
    assert normalise_event_name(name) == "order completed"
    assert to_pulse(track(name, order_id="O", total=1)).event["type"] == "order_placed"


def test_unknown_track_events_are_custom() -> None:
    event = pulse(track("Coupon Applied", coupon_id="C-1", discount=5))
    assert isinstance(event, Custom)
    assert event.name == "Coupon Applied"
    assert event.properties == {"coupon_id": "C-1", "discount": 5}


def test_identify_traits() -> None:
    event = pulse(
        call(
            "identify",
            traits={
                "email": "ann@example.com",
                "phone": 4930123456,
                "firstName": "Ann",
                "last_name": "Lee",
                "timezone": "Europe/Berlin",
                "address": {"postalCode": 10115, "city": "Berlin"},
                "birthday": "1990-04-01",
                "locale": "de-DE",
                "plan": "gold",
            },
        )
    )
    assert isinstance(event, Identify)
    traits = event.traits
    assert (traits.email, traits.phone) == ("ann@example.com", "4930123456")
    assert (traits.first_name, traits.last_name) == ("Ann", "Lee")
    assert (traits.timezone, traits.postcode) == ("Europe/Berlin", "10115")
    assert (traits.birthday, traits.locale) == ("1990-04-01", "de-DE")


def test_identify_takes_the_push_token_from_the_device() -> None:
    """Segment's mobile libraries send the registration token as context.device.token."""
    message = call(
        "identify",
        traits={"email": "ann@example.com"},
        context={"device": {"type": "android", "token": "fcm-reg-token-1"}},
    )
    event = pulse(message)
    assert isinstance(event, Identify)
    assert event.traits.push_token == "fcm-reg-token-1"
    assert to_pulse(message).segment_field("traits.push_token") == "context.device.token"
    without = pulse(call("identify", traits={"email": "ann@example.com"}))
    assert isinstance(without, Identify) and without.traits.push_token is None


def test_identify_prefers_a_flat_postcode() -> None:
    message = call("identify", traits={"postcode": "N1", "address": {"postalCode": "X"}})
    assert to_pulse(message).event["traits"] == {"postcode": "N1"}


def test_page_maps_url_title_referrer() -> None:
    event = pulse(
        call(
            "page",
            name="Home",
            properties={
                "url": "https://shop.example/",
                "title": "Shop",
                "referrer": "https://q.example",
            },
        )
    )
    assert isinstance(event, PageView)
    assert (event.url, event.title, event.referrer) == (
        "https://shop.example/",
        "Shop",
        "https://q.example",
    )


def test_page_falls_back_to_context_page_and_name() -> None:
    message = call("page", name="Home", context={"page": {"url": "https://s.example/a"}})
    event = pulse(message)
    assert isinstance(event, PageView)
    assert (event.url, event.title) == ("https://s.example/a", "Home")


def test_screen_is_an_app_page_view() -> None:
    event = pulse(call("screen", name="Basket"))
    assert isinstance(event, PageView)
    assert (event.channel, event.title, event.url) == ("app", "Basket", None)


def test_mobile_context_means_the_app_channel() -> None:
    message = call("track", event="Cart Viewed", context={"device": {"type": "ios"}})
    assert pulse(message).channel == "app"


def test_the_endpoint_decides_the_call_type() -> None:
    message = {"messageId": "m", "userId": "u", "event": "Cart Viewed"}
    assert to_pulse(message, "track").event["type"] == "cart_viewed"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "track", "messageId": "m", "event": "Cart Viewed"}, "userId"),
        ({"messageId": "m", "userId": "u"}, "type"),
        ({"type": "teleport", "messageId": "m", "userId": "u"}, "type"),
        ({"type": "group", "messageId": "m", "userId": "u"}, "groupId"),
        ({"type": "group", "userId": "u", "groupId": "g", "traits": [1]}, "traits"),
        ({"type": "alias", "messageId": "m", "userId": "u"}, "previousId"),
        ({"type": "alias", "userId": "u", "anonymousId": "a"}, "previousId"),
        ({"type": "alias", "messageId": "m", "previousId": "p"}, "userId"),
        ({"type": "track", "messageId": "m", "userId": "u"}, "event"),
        (call("page", timestamp="yesterday"), "timestamp"),
        (call("page", timestamp="2024-13-01T00:00:00Z"), "timestamp"),
        (call("page", originalTimestamp=5), "originalTimestamp"),
        (call("page", sentAt="soon"), "sentAt"),
        (track("Product Viewed", name="no id"), "properties.product_id"),
        (track("Product Added", sku="S"), "properties.price"),
        (track("Order Completed", total=5), "properties.order_id"),
        (track("Order Completed", order_id="O"), "properties.total"),
        (track("Products Searched"), "properties.query"),
    ],
)
def test_messages_pulse_cannot_take_name_the_segment_field(
    message: dict[str, Any], field: str
) -> None:
    with pytest.raises(SegmentError) as info:
        to_pulse(message)
    assert info.value.field == field
    assert info.value.reason


@pytest.mark.parametrize(
    ("message", "pulse_field", "segment_field"),
    [
        (track("Product Viewed", product_id=5), "sku", "properties.product_id"),
        (track("Product Viewed", sku="S", price=-1), "price", "properties.price"),
        (
            track("Order Completed", order_id="O", total=1, products=[{"sku": "a", "price": -2}]),
            "items[0].price",
            "properties.products[0].price",
        ),
        (
            track("Order Completed", order_id="O", total=1, products=[{"sku": "a", "price": 1}, 7]),
            "items[1]",
            "properties.products[1]",
        ),
        (
            track("Order Completed", order_id="O", revenue=1, currency="euro"),
            "currency",
            "properties.currency",
        ),
        (call("identify", traits={"email": 5}), "traits.email", "traits.email"),
        (call("identify", traits={"firstName": 5}), "traits.first_name", "traits.firstName"),
        (call("page", context={"userAgent": 5}), "context.user_agent", "context.userAgent"),
        (call("page", userId=""), "customer_id", "userId"),
    ],
)
def test_validation_errors_translate_back_to_segment_fields(
    message: dict[str, Any], pulse_field: str, segment_field: str
) -> None:
    mapped = to_pulse(message)
    decoded = decode_event(msgspec.json.encode(mapped.event), 0.0)
    assert isinstance(decoded, DeadLetter)
    assert f"at `$.{pulse_field}`" in decoded.reason
    assert mapped.segment_field(pulse_field) == segment_field


def test_unknown_pulse_fields_are_left_as_they_are() -> None:
    assert Mapped({}, {"sku": "properties.sku"}).segment_field("skus") == "skus"
    assert Mapped({}, {}).segment_field("") == ""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
segment_keys = st.sampled_from(
    [
        "type",
        "messageId",
        "userId",
        "anonymousId",
        "event",
        "properties",
        "traits",
        "context",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "name",
        "previousId",
        "groupId",
    ]
)


@given(
    st.dictionaries(segment_keys, json_values, max_size=8),
    st.sampled_from([None, "track", "identify", "page", "screen", "alias", "group"]),
    st.sampled_from(["Order Completed", "Product Added", "Product Viewed", "Other"]),
)
def test_mapping_never_fails_with_anything_but_a_segment_error(
    message: dict[str, Any], call_type: str | None, name: str
) -> None:
    message.setdefault("event", name)
    try:
        mapped = to_pulse(message, call_type)
    except SegmentError:
        return
    decoded = decode_event(msgspec.json.encode(mapped.event), 0.0)
    if isinstance(decoded, DeadLetter):
        return
    if message.get("messageId") is not None:
        assert decoded.event_id == message["messageId"]
    else:
        assert decoded.event_id == derived_message_id(message, call_type or message["type"])
