"""Segment Tracking API calls to Pulse events: pure functions from dict to dict.

``to_pulse`` turns one Segment call (``track``, ``identify``, ``page``,
``screen``, ``alias``, ``group``; already a plain JSON dict) into the JSON dict
of a Pulse event. The result is then validated by ``engine.decode.decode_event``
like every other event; ``Mapped.segment_field`` translates a field named in a
validation error back to the Segment field it came from, so clients see their
own names.

Track events of Segment's e-commerce spec become Pulse's typed events; any other
track event becomes a ``custom`` event carrying its name and properties. What
Segment's own servers add is done here too (docs/segment.md): a call without
``messageId`` gets one derived from its content, and with ``sentAt`` its time
is corrected for the client's clock skew.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec

CALL_TYPES = ("track", "identify", "page", "screen", "alias", "group")

# Fields that are not the call's content: they differ between two sends of one
# call (sentAt is stamped per attempt; the write key may move to a header).
NOT_CONTENT = frozenset({"messageId", "sentAt", "writeKey", "receivedAt"})
DERIVED_ID_PREFIX = "auto-"
_canonical = msgspec.json.Encoder(order="sorted")

# Segment e-commerce event names (normalised: lower case, single spaces) -> Pulse types.
TRACK_TYPES: dict[str, str] = {
    "product viewed": "product_view",
    "product added": "add_to_cart",
    "product removed": "remove_from_cart",
    "cart viewed": "cart_viewed",
    "checkout started": "checkout_started",
    "order completed": "order_placed",
    "order refunded": "order_refunded",
    "products searched": "search",
}

_SKU = ("properties.product_id", "properties.sku")
_MISSING = object()


class SegmentError(ValueError):
    """The Segment message cannot become a Pulse event; names the Segment field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Mapped:
    """A Pulse event as a JSON dict, and where each of its fields came from."""

    event: dict[str, Any]
    # Pulse field path ("sku", "items[0].price") -> Segment path ("properties.sku").
    sources: dict[str, str] = field(default_factory=dict)

    def segment_field(self, pulse_field: str) -> str:
        """The Segment path for a Pulse field path from a validation error."""
        for pulse_path in sorted(self.sources, key=len, reverse=True):
            if pulse_field == pulse_path or pulse_field.startswith(
                (pulse_path + ".", pulse_path + "[")
            ):
                return self.sources[pulse_path] + pulse_field[len(pulse_path) :]
        return pulse_field


def normalise_event_name(name: str) -> str:
    """'Order Completed', 'order_completed' and 'order  completed' are one event."""
    return " ".join(name.replace("_", " ").split()).lower()


def call_type(message: Mapping[str, Any], call: str | None = None) -> str:
    """The call's type: implied by the endpoint (``/v1/track``) or its own ``type``."""
    kind = call or message.get("type")
    if kind not in CALL_TYPES:
        if kind is None:
            raise SegmentError("type", f"required: one of {', '.join(CALL_TYPES)}")
        raise SegmentError("type", f"Pulse does not take {kind!r} calls")
    return str(kind)


def derived_message_id(message: Mapping[str, Any], kind: str) -> str:
    """The id of a call sent without ``messageId``: a digest of its content.

    The content is the call's JSON object (in a batch, with the batch's
    context merged into its own) and its type, less the fields in
    ``NOT_CONTENT``; keys in any order. So a raw call sent again counts once,
    and a call that differs in anything else is another event.
    """
    content = {k: v for k, v in message.items() if k not in NOT_CONTENT}
    content["type"] = kind
    digest = hashlib.sha256(_canonical.encode(content)).hexdigest()
    return DERIVED_ID_PREFIX + digest[:32]


def to_pulse(
    message: Mapping[str, Any], call: str | None = None, received_at: datetime | None = None
) -> Mapped:
    """Map one Segment call to a Pulse event dict.

    ``call`` is the call type when the endpoint implies it (``/v1/track``);
    otherwise the message's own ``type`` is used. ``received_at``: when Pulse
    received the call; it corrects the call's time for clock skew (with
    ``sentAt``) and is kept as the event's ``received_at``. Raises
    ``SegmentError`` for a message Pulse cannot take (no user, unsupported
    call type, a time that is not one).
    """
    kind = call_type(message, call)
    out = _Builder(message)
    out.take("event_id", "messageId")
    if "event_id" not in out.event:
        out.event["event_id"] = derived_message_id(message, kind)
    no_user = _get(message, "userId") is None and _get(message, "anonymousId") is None
    if no_user and kind != "alias":  # an alias names its ids itself (_alias)
        raise SegmentError("userId", "userId or anonymousId is required")
    out.take("customer_id", "userId")
    out.take("anonymous_id", "anonymousId")
    _times(out, received_at)
    out.event["channel"] = "app" if kind == "screen" or _from_app(message) else "web"
    out.take("context.ip", "context.ip")
    out.take("context.user_agent", "context.userAgent")
    out.take("context.locale", "context.locale")
    out.take("context.timezone", "context.timezone")

    if kind == "identify":
        _identify(out)
    elif kind in ("page", "screen"):
        _page(out, screen=kind == "screen")
    elif kind == "alias":
        _alias(out)
    elif kind == "group":
        _group(out)
    else:
        _track(out)
    return Mapped(out.event, out.sources)


def _times(out: _Builder, received_at: datetime | None) -> None:
    """The event time, corrected for clock skew as Segment does: with ``sentAt``
    (the client's clock when it sent), received - (sentAt - the call's time)."""
    given = {f: parse_time(out.message, f) for f in _TIME_FIELDS if out.has(f)}
    own_field = next((f for f in ("timestamp", "originalTimestamp") if f in given), None)
    own = given[own_field] if own_field else None
    sent = given.get("sentAt")
    if received_at is not None:
        out.event["received_at"] = received_at.isoformat()
        if sent is not None and own is None:
            own = received_at
        elif sent is not None and own is not None:
            with contextlib.suppress(OverflowError):  # past year 1 or 9999: left as sent
                own = received_at - (sent - own)
    if own is not None:
        out.event["timestamp"] = own.isoformat()
        out.sources["timestamp"] = own_field or "sentAt"


def _alias(out: _Builder) -> None:
    """``previousId`` (an anonymous id or another user id) becomes ``userId``.

    A call's own ``anonymousId`` is not the previous id (analytics.js fills
    ``previousId`` itself): the Pulse event's anonymous id is the previous id.
    """
    out.event["type"] = "alias"
    if "customer_id" not in out.event:
        raise SegmentError("userId", "required: the id the previous id becomes")
    out.event.pop("anonymous_id", None)
    out.take("anonymous_id", "previousId", required=True)


def _group(out: _Builder) -> None:
    out.event["type"] = "group"
    out.take("group_id", "groupId", required=True, text=True)
    traits = _get(out.message, "traits")
    if traits is not None and not isinstance(traits, Mapping):
        raise SegmentError("traits", "must be an object")
    out.event["traits"] = flat_traits(traits or {})
    out.sources["traits"] = "traits"


def flat_traits(traits: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Group traits as an account keeps them: scalars, nested objects flattened
    with dots (``address.city``); nulls and lists are left out."""
    out: dict[str, Any] = {}
    for key, value in traits.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_traits(value, f"{name}."))
        elif isinstance(value, str | int | float | bool):
            out[name] = value
    return out


_TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt")
# RFC 3339, and as Segment's servers take it also without zero padding
# ("2015-2-02T00:30:08.276Z", in Segment's own batch example).
_TIME = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"[Tt ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d+))?)?"
    r"(Z|z|[+-]\d{2}:?\d{2})"
)


def parse_time(message: Mapping[str, Any], path: str) -> datetime:
    """The time at ``path``, as Segment's servers read one (see ``_TIME``)."""
    value = _get(message, path)
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise SegmentError(path, f"not an ISO 8601 time: {value!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    zone = UTC
    if offset not in ("Z", "z"):
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:])
        zone = timezone(sign * timedelta(minutes=minutes))
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=zone,
        )
    except ValueError as exc:
        raise SegmentError(path, f"not a time: {value!r} ({exc})") from None


def _identify(out: _Builder) -> None:
    out.event["type"] = "identify"
    out.event["traits"] = {}
    out.take("traits.email", "traits.email")
    out.take("traits.phone", "traits.phone", text=True)
    out.take("traits.first_name", "traits.firstName", "traits.first_name")
    out.take("traits.last_name", "traits.lastName", "traits.last_name")
    out.take("traits.timezone", "traits.timezone")
    out.take(
        "traits.postcode",
        "traits.postcode",
        "traits.postalCode",
        "traits.postal_code",
        "traits.address.postalCode",
        "traits.address.postal_code",
        text=True,
    )
    out.take("traits.birthday", "traits.birthday")
    out.take("traits.locale", "traits.locale")
    # Segment's mobile libraries put the push registration token on the device.
    out.take("traits.push_token", "context.device.token")


def _page(out: _Builder, *, screen: bool) -> None:
    out.event["type"] = "page_view"
    if not screen:
        out.take("url", "properties.url", "context.page.url")
        out.take("referrer", "properties.referrer", "context.page.referrer")
    out.take("title", "properties.title", "context.page.title", "name", "properties.name")


def _track(out: _Builder) -> None:
    name = out.message.get("event")
    if not isinstance(name, str) or not name:
        raise SegmentError("event", "required: the name of the track event")
    kind = TRACK_TYPES.get(normalise_event_name(name), "custom")
    out.event["type"] = kind
    if kind == "product_view":
        out.take("sku", *_SKU, required=True)
        out.take("category", "properties.category")
        out.take("price", "properties.price")
        out.take("name", "properties.name")
    elif kind == "add_to_cart":
        out.take("sku", *_SKU, required=True)
        out.take("price", "properties.price", required=True)
        out.take("quantity", "properties.quantity")
        out.take("category", "properties.category")
        out.take("name", "properties.name")
    elif kind == "remove_from_cart":
        out.take("sku", *_SKU, required=True)
        out.take("quantity", "properties.quantity")
    elif kind == "checkout_started":
        out.take("value", "properties.value", "properties.revenue", "properties.total")
    elif kind == "order_placed":
        out.take("order_id", "properties.order_id", required=True)
        out.take("total", "properties.total", "properties.revenue", required=True)
        out.take("currency", "properties.currency", upper=True)
        _line_items(out)
    elif kind == "order_refunded":
        out.take("order_id", "properties.order_id", required=True)
        out.take("amount", "properties.total", "properties.revenue", "properties.value")
    elif kind == "search":
        out.take("query", "properties.query", required=True)
    elif kind == "custom":
        out.event["name"] = name
        out.sources["name"] = "event"
        out.take("properties", "properties")


def _line_items(out: _Builder) -> None:
    products = _get(out.message, "properties.products")
    if products is None:
        return
    out.sources["items"] = "properties.products"
    if not isinstance(products, list):
        out.event["items"] = products  # validation names the field
        return
    items: list[Any] = []
    for i, product in enumerate(products):
        if not isinstance(product, Mapping):
            items.append(product)
            continue
        line = _Builder(product)
        line.take("sku", "product_id", "sku")
        line.take("price", "price")
        line.take("quantity", "quantity")
        line.take("category", "category")
        line.take("name", "name")
        items.append(line.event)
        for pulse_path, segment_path in line.sources.items():
            out.sources[f"items[{i}].{pulse_path}"] = f"properties.products[{i}].{segment_path}"
    out.event["items"] = items


class _Builder:
    """Collects Pulse fields from a Segment message, remembering their sources."""

    def __init__(self, message: Mapping[str, Any]) -> None:
        self.message = message
        self.event: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def has(self, path: str) -> bool:
        return _get(self.message, path) is not None

    def take(
        self,
        pulse_field: str,
        *paths: str,
        required: bool = False,
        text: bool = False,
        upper: bool = False,
    ) -> None:
        """Set ``pulse_field`` (dotted for nesting) from the first present path."""
        for path in paths:
            value = _get(self.message, path)
            if value is None:
                continue
            if text and isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if upper and isinstance(value, str):
                value = value.upper()
            *parents, leaf = pulse_field.split(".")
            target = self.event
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value
            self.sources[pulse_field] = path
            return
        if required:
            others = f" (or {', '.join(paths[1:])})" if len(paths) > 1 else ""
            raise SegmentError(paths[0], f"required{others}")


def _get(message: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or None when any step is absent or not an object."""
    value: Any = message
    for step in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(step, _MISSING)
        if value is _MISSING:
            return None
    return value


def _from_app(message: Mapping[str, Any]) -> bool:
    """Segment's mobile libraries describe the app and an iOS or Android device."""
    device = _get(message, "context.device.type")
    return _get(message, "context.app") is not None or (
        isinstance(device, str) and device.lower() in ("ios", "android")
    )
