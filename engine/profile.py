"""Per-customer state and the serving view derived from it."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from engine.triggers import Timer

RECENT_ITEMS = 20
SESSION_GAP_S = 30 * 60.0  # a new session after 30 minutes without events
AFFINITY_TAU_S = 30 * 86400.0  # category affinity halves in about three weeks
MAX_ORDERS_KEPT = 200  # order history kept for refunds and rolling spend


class CartLine(msgspec.Struct, array_like=True):
    sku: str
    quantity: int
    price: float
    category: str | None = None
    name: str | None = None
    price_at: float = 0.0  # event time of the price


class Viewed(msgspec.Struct, array_like=True):
    sku: str
    ts: float


class Consent(msgspec.Struct, array_like=True):
    granted: bool
    ts: float

    def supersedes(self, other: Consent) -> bool:
        """The later decision wins; at the same time, a refusal wins (the safe side)."""
        return (self.ts, not self.granted) >= (other.ts, not other.granted)


class Decayed(msgspec.Struct, array_like=True):
    """An exponentially decaying score: ``value`` as of time ``at``."""

    value: float
    at: float

    def add(self, weight: float, ts: float) -> None:
        if ts >= self.at:
            self.value = self.value * math.exp((self.at - ts) / AFFINITY_TAU_S) + weight
            self.at = ts
        else:  # a late event adds its weight as decayed to the current time
            self.value += weight * math.exp((ts - self.at) / AFFINITY_TAU_S)

    def at_time(self, ts: float) -> float:
        return self.value * math.exp(min(0.0, self.at - ts) / AFFINITY_TAU_S)


class OrderRecord(msgspec.Struct, array_like=True):
    order_id: str
    ts: float
    total: float
    refunded: float = 0.0
    points: int = 0  # loyalty points the order earned


class Engagement(msgspec.Struct, array_like=True):
    """Messages per channel: sent, opened, clicked, bounced, and the last engagement."""

    sent: int = 0
    opened: int = 0
    clicked: int = 0
    bounced: int = 0
    last_at: float = 0.0

    @property
    def score(self) -> float:
        return self.opened + 3.0 * self.clicked - 2.0 * self.bounced


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
    sessions: int = 0
    session_started_at: float = 0.0
    recently_viewed: list[Viewed] = []  # most recent first, by event time
    category_views: dict[str, int] = {}
    affinity: dict[str, Decayed] = {}
    cart: dict[str, CartLine] = {}
    cart_updated_at: float = 0.0
    orders: int = 0
    revenue: float = 0.0  # order totals minus refunds
    refunds: int = 0
    last_order_at: float = 0.0
    order_history: list[OrderRecord] = []  # oldest first, at most MAX_ORDERS_KEPT
    pending_refunds: dict[str, float | None] = {}  # refunds that came before their order
    loyalty_points: int = 0
    tier: str = ""
    previous_tier: str = ""
    tier_changed_at: float = 0.0
    engagement: dict[str, Engagement] = {}
    active_hours: list[int] = []  # 24 counts by local hour of day, once used
    consent: dict[str, Consent] = {}
    open_tickets: list[str] = []
    traits: dict[str, str] = {}
    trait_times: dict[str, float] = {}  # event time of each trait's value
    segments: list[str] = []
    timers: dict[str, Timer] = {}
    # Event ids seen within the dedup window (id -> event time), and how many
    # repeated ids were dropped.
    seen_ids: dict[str, float] = {}
    duplicates: int = 0
    anonymous_ids: list[str] = []  # linked anonymous ids (needed to erase them too)
    # Set on erasure: the state is a tombstone and events up to this time are ignored.
    erased_at: float = 0.0
    ignored_after_erasure: int = 0

    @property
    def cart_value(self) -> float:
        return round(sum(line.price * line.quantity for line in self.cart.values()), 2) + 0.0

    @property
    def cart_quantity(self) -> int:
        return sum(line.quantity for line in self.cart.values())

    def spend_since(self, since: float) -> float:
        return sum(o.total - o.refunded for o in self.order_history if o.ts >= since)

    def orders_since(self, since: float) -> int:
        return sum(1 for o in self.order_history if o.ts >= since)

    @property
    def preferred_channel(self) -> str:
        best = max(
            self.engagement.items(), key=lambda kv: (kv[1].score, kv[1].last_at), default=None
        )
        return best[0] if best is not None and best[1].score > 0 else ""

    @property
    def preferred_hour(self) -> int:
        if not self.active_hours or not any(self.active_hours):
            return -1
        return max(range(24), key=lambda h: (self.active_hours[h], -h))


_enc = msgspec.json.Encoder()


def _json(value: Any) -> str:
    return _enc.encode(value).decode()


def profile_view(state: CustomerState, window_s: float = 365 * 86400.0) -> dict[str, str]:
    """The flat Redis hash served by the API: absolute values only.

    Every field is always written, so a replayed write overwrites rather than
    accumulates, and a field that became empty (an emptied cart) is cleared.
    Nothing here depends on the wall clock: time-relative figures (days since
    the last order, RFM recency) are computed when read.
    """
    aov = state.revenue / state.orders if state.orders else 0.0
    since = state.last_seen - window_s
    return {
        "customer_id": state.customer_id,
        "first_seen": repr(state.first_seen),
        "last_seen": repr(state.last_seen),
        "events_total": str(state.events_total),
        "event_counts": _json(state.event_counts),
        "sessions": str(state.sessions),
        "recently_viewed": _json([v.sku for v in state.recently_viewed]),
        "category_views": _json(state.category_views),
        "category_affinity": _json(
            {c: round(d.at_time(state.last_seen), 4) for c, d in state.affinity.items()}
        ),
        "cart": _json(
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
        ),
        "cart_value": repr(state.cart_value),
        "cart_quantity": str(state.cart_quantity),
        "cart_updated_at": repr(state.cart_updated_at),
        "orders": str(state.orders),
        "revenue": repr(round(state.revenue, 2) + 0.0),
        "average_order_value": repr(round(aov, 2) + 0.0),
        "refunds": str(state.refunds),
        "last_order_at": repr(state.last_order_at),
        "orders_12m": str(state.orders_since(since)),
        "spend_12m": repr(round(state.spend_since(since), 2) + 0.0),
        "loyalty_points": str(state.loyalty_points),
        "tier": state.tier,
        "previous_tier": state.previous_tier,
        "tier_changed_at": repr(state.tier_changed_at),
        "preferred_channel": state.preferred_channel,
        "preferred_hour": str(state.preferred_hour),
        "consent": _json({ch: c.granted for ch, c in state.consent.items()}),
        "open_tickets": _json(state.open_tickets),
        "traits": _json(state.traits),
        "segments": _json(state.segments),
        "duplicate_events": str(state.duplicates),
        "anonymous_ids": _json(state.anonymous_ids),
    }


_JSON_FIELDS = frozenset(
    {
        "event_counts",
        "recently_viewed",
        "category_views",
        "category_affinity",
        "cart",
        "consent",
        "open_tickets",
        "traits",
        "segments",
        "anonymous_ids",
    }
)
_INT_FIELDS = frozenset(
    {
        "events_total",
        "cart_quantity",
        "orders",
        "duplicate_events",
        "sessions",
        "refunds",
        "orders_12m",
        "loyalty_points",
        "preferred_hour",
    }
)
_STR_FIELDS = frozenset({"customer_id", "tier", "previous_tier", "preferred_channel"})


def parse_view(raw: dict[str, str]) -> dict[str, Any]:
    """The Redis hash back into typed JSON values, for the API."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _JSON_FIELDS:
            out[key] = msgspec.json.decode(value)
        elif key in _INT_FIELDS:
            out[key] = int(value)
        elif key in _STR_FIELDS:
            out[key] = value
        else:
            out[key] = float(value)
    return out
