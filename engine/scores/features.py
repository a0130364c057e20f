"""What the score models see of a customer: numbers derived from the profile.

``features(state, now)`` reads a ``CustomerState`` (engine/profile.py) as of
event time ``now`` and returns a tuple of floats in the order of ``FEATURES``;
``as_dict`` names them for River. Every feature is bounded or log-scaled, so
one big spender cannot dominate the scaler's running variance, and each one is
defined for a customer who has not ordered yet (the cold start the models see
most often). Time-relative features count from ``now``, never from the wall
clock: a snapshot taken at a timer (no event) sees the customer age.

| feature | definition |
|---|---|
| has_ordered | 1 once the customer has an order, else 0 |
| log_days_since_order | log(1 + days since the last order; before any, since first seen) |
| log_days_since_seen | log(1 + days since the last event of any kind) |
| log_tenure_days | log(1 + days since the first event) |
| log_orders | log(1 + orders ever) |
| log_orders_30d, log_orders_90d, log_orders_365d | log(1 + orders in the last 30 / 90 / 365 days) |
| log_spend_90d, log_spend_365d | log(1 + net spend in the last 90 / 365 days) |
| log_revenue | log(1 + net spend ever) |
| log_avg_order | log(1 + net spend per order) |
| orders_per_30d | orders per 30 days of tenure (tenure at least 30 days), at most 30 |
| log_mean_gap_days | log(1 + mean days between orders), 0 below 2 orders |
| overdue | days since the last order / mean days between orders, at most 10; 0 below 2 orders |
| refund_rate | refunds per order, at most 1 |
| log_sessions | log(1 + sessions) |
| log_views | log(1 + product views ever) |
| log_cart_adds | log(1 + add-to-cart events ever) |
| recent_views_7d | recently viewed items (of the last 20) viewed in the last 7 days |
| cart_open | 1 while the cart holds something |
| log_cart_value | log(1 + cart value) |
| log_engagement | log(1 + messages opened + clicked, all channels) |

Order counts and spend come from ``order_history`` (the last 200 orders, net
of refunds); the rest from counters the state keeps anyway. Nothing here
changes the state.
"""

from __future__ import annotations

import math

from engine.profile import CustomerState

DAY_S = 86400.0

FEATURES: tuple[str, ...] = (
    "has_ordered",
    "log_days_since_order",
    "log_days_since_seen",
    "log_tenure_days",
    "log_orders",
    "log_orders_30d",
    "log_orders_90d",
    "log_orders_365d",
    "log_spend_90d",
    "log_spend_365d",
    "log_revenue",
    "log_avg_order",
    "orders_per_30d",
    "log_mean_gap_days",
    "overdue",
    "refund_rate",
    "log_sessions",
    "log_views",
    "log_cart_adds",
    "recent_views_7d",
    "cart_open",
    "log_cart_value",
    "log_engagement",
)

Features = tuple[float, ...]

_log1p = math.log1p


def features(state: CustomerState, now: float) -> Features:
    """The customer's features as of event time ``now`` (in ``FEATURES`` order)."""
    orders = state.orders
    tenure = max(0.0, now - state.first_seen) / DAY_S if state.first_seen else 0.0
    seen_ago = max(0.0, now - state.last_seen) / DAY_S if state.last_seen else 0.0
    history = state.order_history
    if orders and state.last_order_at:
        since_order = max(0.0, now - state.last_order_at) / DAY_S
    else:
        since_order = tenure
    # Newest last: walk back until a year before now.
    o30 = o90 = o365 = 0
    s90 = s365 = 0.0
    d30, d90, d365 = now - 30 * DAY_S, now - 90 * DAY_S, now - 365 * DAY_S
    for record in reversed(history):
        ts = record.ts
        if ts < d365:
            break
        if ts > now:  # an order from after ``now`` (a late timer): not known yet
            continue
        net = record.total - record.refunded
        o365 += 1
        s365 += net
        if ts >= d90:
            o90 += 1
            s90 += net
            if ts >= d30:
                o30 += 1
    if len(history) >= 2:
        gap = max(0.0, history[-1].ts - history[0].ts) / DAY_S / (len(history) - 1)
        overdue = min(10.0, since_order / gap) if gap > 0 else 10.0
    else:
        gap = overdue = 0.0
    revenue = max(0.0, state.revenue)
    counts = state.event_counts
    week_ago = now - 7 * DAY_S
    recent = 0
    for viewed in state.recently_viewed:  # most recent first
        if viewed.ts < week_ago:
            break
        recent += 1
    cart_value = 0.0
    for line in state.cart.values():
        cart_value += line.price * line.quantity
    engaged = 0
    for e in state.engagement.values():
        engaged += e.opened + e.clicked
    return (
        1.0 if orders else 0.0,
        _log1p(since_order),
        _log1p(seen_ago),
        _log1p(tenure),
        _log1p(orders),
        _log1p(o30),
        _log1p(o90),
        _log1p(o365),
        _log1p(max(0.0, s90)),
        _log1p(max(0.0, s365)),
        _log1p(revenue),
        _log1p(revenue / orders) if orders else 0.0,
        min(30.0, orders * 30.0 / max(tenure, 30.0)),
        _log1p(gap),
        overdue,
        min(1.0, state.refunds / orders) if orders else 0.0,
        _log1p(state.sessions),
        _log1p(counts.get("product_view", 0)),
        _log1p(counts.get("add_to_cart", 0)),
        float(recent),
        1.0 if state.cart else 0.0,
        _log1p(max(0.0, cart_value)),
        _log1p(engaged),
    )


def as_dict(x: Features) -> dict[str, float]:
    """The features by name, as River's estimators take them."""
    return dict(zip(FEATURES, x, strict=True))
