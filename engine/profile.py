"""Per-customer state and the serving view derived from it."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.triggers import Timer

RECENT_ITEMS = 20


class CartLine(msgspec.Struct, array_like=True):
    sku: str
    quantity: int
    price: float
    category: str | None = None
    name: str | None = None


class Viewed(msgspec.Struct, array_like=True):
    sku: str
    ts: float


class Consent(msgspec.Struct, array_like=True):
    granted: bool
    ts: float


class CustomerState(msgspec.Struct, kw_only=True):
    """Everything the dataflow keeps about one customer between events.

    Mutable for speed: ``apply`` owns the state it is given and returns it.
    Snapshots pickle it; msgspec Structs pickle compactly.
    """

    customer_id: str
    first_seen: float = 0.0
    last_seen: float = 0.0
    events_total: int = 0
    event_counts: dict[str, int] = {}
    recently_viewed: list[Viewed] = []  # most recent first, by event time
    category_views: dict[str, int] = {}
    cart: dict[str, CartLine] = {}
    cart_updated_at: float = 0.0
    orders: int = 0
    revenue: float = 0.0
    last_order_at: float = 0.0
    consent: dict[str, Consent] = {}
    open_tickets: list[str] = []
    traits: dict[str, str] = {}
    timers: dict[str, Timer] = {}
    # Event ids seen within the dedup window (id -> event time), and how many
    # repeated ids were dropped.
    seen_ids: dict[str, float] = {}
    duplicates: int = 0

    @property
    def cart_value(self) -> float:
        return round(sum(line.price * line.quantity for line in self.cart.values()), 2) + 0.0

    @property
    def cart_quantity(self) -> int:
        return sum(line.quantity for line in self.cart.values())


_enc = msgspec.json.Encoder()


def profile_view(state: CustomerState) -> dict[str, str]:
    """The flat Redis hash served by the API: absolute values only.

    Every field is always written, so a replayed write overwrites rather than
    accumulates, and a field that became empty (an emptied cart) is cleared.
    """
    aov = state.revenue / state.orders if state.orders else 0.0
    return {
        "customer_id": state.customer_id,
        "first_seen": repr(state.first_seen),
        "last_seen": repr(state.last_seen),
        "events_total": str(state.events_total),
        "event_counts": _enc.encode(state.event_counts).decode(),
        "recently_viewed": _enc.encode([v.sku for v in state.recently_viewed]).decode(),
        "category_views": _enc.encode(state.category_views).decode(),
        "cart": _enc.encode(
            [
                {
                    "sku": c.sku,
                    "quantity": c.quantity,
                    "price": c.price,
                    "category": c.category,
                    "name": c.name,
                }
                for c in state.cart.values()
            ]
        ).decode(),
        "cart_value": repr(state.cart_value),
        "cart_quantity": str(state.cart_quantity),
        "cart_updated_at": repr(state.cart_updated_at),
        "orders": str(state.orders),
        "revenue": repr(round(state.revenue, 2)),
        "average_order_value": repr(round(aov, 2)),
        "last_order_at": repr(state.last_order_at),
        "consent": _enc.encode({ch: c.granted for ch, c in state.consent.items()}).decode(),
        "open_tickets": _enc.encode(state.open_tickets).decode(),
        "traits": _enc.encode(state.traits).decode(),
        "duplicate_events": str(state.duplicates),
    }


_JSON_FIELDS = frozenset(
    {
        "event_counts",
        "recently_viewed",
        "category_views",
        "cart",
        "consent",
        "open_tickets",
        "traits",
    }
)
_INT_FIELDS = frozenset({"events_total", "cart_quantity", "orders", "duplicate_events"})


def parse_view(raw: dict[str, str]) -> dict[str, Any]:
    """The Redis hash back into typed JSON values, for the API."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _JSON_FIELDS:
            out[key] = msgspec.json.decode(value)
        elif key in _INT_FIELDS:
            out[key] = int(value)
        elif key == "customer_id":
            out[key] = value
        else:
            out[key] = float(value)
    return out
