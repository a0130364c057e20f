"""The behavioural events Pulse understands, as one tagged union of msgspec Structs.

These Structs are the single source of truth: decoding validates against them,
the JSON Schema in ``docs/`` is generated from them, and the engine consumes
them directly. The ``type`` field selects the event kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Channel = Literal["web", "app", "store", "email", "sms", "push", "call_center"]
MessageChannel = Literal["email", "sms", "push", "webhook", "in_app", "log"]

Id = Annotated[str, Meta(min_length=1, max_length=256)]
Money = Annotated[float, Meta(ge=0, le=1e9)]
Quantity = Annotated[int, Meta(ge=1, le=100_000)]
# The length bound matters: a regex "$" also matches before a trailing newline.
Currency = Annotated[str, Meta(pattern="^[A-Z]{3}$", max_length=3)]


class Context(Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=False):
    ip: str | None = None
    user_agent: str | None = None
    locale: str | None = None
    timezone: str | None = None


class BaseEvent(Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", gc=False):
    """Fields every event carries. At least one of customer_id / anonymous_id.

    ``gc=False``: an event holds only values (no event can hold itself), and the
    latest events stay in customers' pending actions, where tracking them would
    only lengthen every full collection.
    """

    event_id: Id
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    # RFC 3339 with an offset; the collector fills in the receive time when absent.
    timestamp: datetime | None = None
    channel: Channel = "web"
    context: Context | None = None
    # When the collector received it, kept beside a timestamp it corrected for
    # the client's clock skew (Segment calls with sentAt, docs/segment.md).
    received_at: Annotated[datetime, Meta(tz=True)] | None = None

    def __post_init__(self) -> None:
        if self.customer_id is None and self.anonymous_id is None:
            raise ValueError("customer_id or anonymous_id is required")
        if self.timestamp is not None and self.timestamp.tzinfo is None:
            raise ValueError("timestamp must carry a UTC offset (RFC 3339)")

    @property
    def customer_key(self) -> str:
        """The key the event is partitioned and keyed by: known id, else anonymous."""
        return self.customer_id or f"anon:{self.anonymous_id}"

    @property
    def ts(self) -> float:
        """Event time in epoch seconds (0.0 when unset, which decode never leaves)."""
        return self.timestamp.timestamp() if self.timestamp is not None else 0.0


class Traits(Struct, frozen=True, omit_defaults=True):
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    timezone: str | None = None
    postcode: str | None = None
    birthday: str | None = None
    locale: str | None = None
    # The app's push registration token (FCM), for the push channel.
    push_token: str | None = None


class LineItem(Struct, frozen=True, omit_defaults=True):
    sku: Id
    price: Money
    quantity: Quantity = 1
    category: str | None = None
    name: str | None = None


class Identify(BaseEvent, frozen=True, tag="identify"):
    traits: Traits = Traits()


class PageView(BaseEvent, frozen=True, tag="page_view"):
    url: str | None = None
    title: str | None = None
    referrer: str | None = None


class ProductView(BaseEvent, frozen=True, tag="product_view"):
    sku: Id
    category: str | None = None
    price: Money | None = None
    name: str | None = None


class Search(BaseEvent, frozen=True, tag="search"):
    query: Annotated[str, Meta(max_length=1000)]
    results: int | None = None


class AddToCart(BaseEvent, frozen=True, tag="add_to_cart"):
    sku: Id
    price: Money
    quantity: Quantity = 1
    category: str | None = None
    name: str | None = None


class RemoveFromCart(BaseEvent, frozen=True, tag="remove_from_cart"):
    sku: Id
    quantity: Quantity | None = None  # None removes the whole line


class CartViewed(BaseEvent, frozen=True, tag="cart_viewed"):
    pass


class CheckoutStarted(BaseEvent, frozen=True, tag="checkout_started"):
    value: Money | None = None


class OrderPlaced(BaseEvent, frozen=True, tag="order_placed"):
    order_id: Id
    total: Money
    currency: Currency = "EUR"
    items: tuple[LineItem, ...] = ()


class OrderRefunded(BaseEvent, frozen=True, tag="order_refunded"):
    order_id: Id
    amount: Money | None = None  # None refunds the whole order


class SupportTicketOpened(BaseEvent, frozen=True, tag="support_ticket_opened"):
    ticket_id: Id
    subject: str | None = None


class SupportTicketClosed(BaseEvent, frozen=True, tag="support_ticket_closed"):
    ticket_id: Id


class _MessageEvent(BaseEvent, frozen=True):
    message_id: Id
    message_channel: MessageChannel
    trigger_id: str | None = None
    rule_id: str | None = None


class MessageSent(_MessageEvent, frozen=True, tag="message_sent"):
    pass


class MessageDelivered(_MessageEvent, frozen=True, tag="message_delivered"):
    pass


class MessageOpened(_MessageEvent, frozen=True, tag="message_opened"):
    pass


class MessageClicked(_MessageEvent, frozen=True, tag="message_clicked"):
    pass


class MessageBounced(_MessageEvent, frozen=True, tag="message_bounced"):
    reason: str | None = None


class MessageUnsubscribed(_MessageEvent, frozen=True, tag="message_unsubscribed"):
    pass


class MessageFailed(_MessageEvent, frozen=True, tag="message_failed"):
    """Pulse could not deliver it: a permanent refusal or retries exhausted
    (the trigger is then on ``<prefix>.triggers.dlq``)."""

    reason: str | None = None


class ConsentChanged(BaseEvent, frozen=True, tag="consent_changed"):
    consent_channel: MessageChannel
    granted: bool


class StoreVisit(BaseEvent, frozen=True, tag="store_visit"):
    store_id: Id


class LoyaltyPointsAdjusted(BaseEvent, frozen=True, tag="loyalty_points_adjusted"):
    points: int
    reason: str | None = None


class Alias(BaseEvent, frozen=True, tag="alias"):
    """`customer_id` is who `anonymous_id` was: an anonymous id or another customer's id.

    Both ids are required. Merges the previous id's profile into the customer's
    as an identify does for an anonymous id, and a previous customer id's own
    profile too (docs/identity.md); the same id twice merges nothing.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.customer_id is None or self.anonymous_id is None:
            raise ValueError("alias needs customer_id and anonymous_id (the previous id)")


# An account trait: what a Segment group call's traits hold, flattened.
AccountTrait = str | int | float | bool


class Group(BaseEvent, frozen=True, tag="group"):
    """The customer belongs to the account `group_id` (Segment's group call), with its traits."""

    group_id: Id
    traits: Annotated[dict[str, AccountTrait], Meta(max_length=200)] = {}


class Custom(BaseEvent, frozen=True, tag="custom"):
    """A track event Pulse has no type for; kept so nothing is dropped."""

    name: Id
    properties: dict[str, Any] = {}


Event = (
    Identify
    | PageView
    | ProductView
    | Search
    | AddToCart
    | RemoveFromCart
    | CartViewed
    | CheckoutStarted
    | OrderPlaced
    | OrderRefunded
    | SupportTicketOpened
    | SupportTicketClosed
    | MessageSent
    | MessageDelivered
    | MessageOpened
    | MessageClicked
    | MessageBounced
    | MessageUnsubscribed
    | MessageFailed
    | ConsentChanged
    | StoreVisit
    | LoyaltyPointsAdjusted
    | Alias
    | Group
    | Custom
)

EVENT_TYPES: tuple[type[BaseEvent], ...] = Event.__args__  # type: ignore[attr-defined]
EVENT_TYPE_NAMES: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in EVENT_TYPES)


_TYPE_NAMES: dict[type, str] = dict(zip(EVENT_TYPES, EVENT_TYPE_NAMES, strict=True))


def event_type(event: BaseEvent) -> str:
    """The event's ``type`` (a dictionary lookup: the struct config is made anew on each read)."""
    try:
        return _TYPE_NAMES[type(event)]
    except KeyError:  # a subclass
        return event.__struct_config__.tag  # type: ignore[return-value]


def json_schema() -> dict[str, object]:
    """JSON Schema of an event, generated from the Structs above (plus what
    Alias.__post_init__ checks: both ids)."""
    schema: dict[str, Any] = msgspec.json.schema(Event)  # type: ignore[arg-type]
    alias = schema["$defs"]["Alias"]
    alias["required"] = sorted({*alias.get("required", []), "customer_id", "anonymous_id"})
    return schema
