"""What the bandit sees of a customer at a decision: a few bounded numbers.

Every feature lies in [0, 1]: LinUCB's confidence width grows with the length
of the context vector, and one big spender must not make every other
customer look like nobody. Each is defined for a customer who has not ordered
yet (the cold start most decisions meet) and counts time from the decision's
event time, never from the wall clock. The inputs are the profile fields the
rules read (docs/rule-fields.md), read straight from the state in one
function: this runs on most of a customer's events, so it costs a few
microseconds, not one getter call per feature.

| feature | definition |
|---|---|
| bias | always 1: the action's base rate |
| identified | 1 once the customer is known (not anon:) |
| returning | 1 once the customer has ordered |
| orders | log(1 + orders) / log(21), at most 1 (20 orders and more read 1) |
| recency | exp(-days since the last order / 30); 0 before any order |
| tenure | 1 - exp(-days since the first event / 90) |
| sessions | log(1 + sessions) / log(51), at most 1 |
| browsing | product views per session / 10, at most 1 (how much a visit looks around) |
| cart | 1 while the cart holds something |
| cart_value | log(1 + cart value) / log(501), at most 1 |
| order_value | log(1 + revenue per order) / log(501), at most 1 |
| tier | the loyalty tier's rank / (tiers - 1): 0 for the first tier, 1 for the top |

A change here changes the meaning of a learned policy: ``FEATURES_VERSION``
(the names and ``_REVISION``, raised with any change of a definition) goes
into every decision's context version, and a policy restored with other
features starts again.
"""

from __future__ import annotations

import hashlib
import math

from engine.rules.context import Scope

FEATURE_NAMES: tuple[str, ...] = (
    "bias",
    "identified",
    "returning",
    "orders",
    "recency",
    "tenure",
    "sessions",
    "browsing",
    "cart",
    "cart_value",
    "order_value",
    "tier",
)
_REVISION = 1
FEATURES_VERSION = hashlib.blake2b(
    f"{_REVISION} {' '.join(FEATURE_NAMES)}".encode(), digest_size=4
).hexdigest()

_DAY = 86400.0
_LOG21 = math.log(21.0)
_LOG51 = math.log(51.0)
_LOG501 = math.log(501.0)


def features(scope: Scope) -> tuple[float, ...]:
    """The context vector, in the order of ``FEATURE_NAMES``."""
    s = scope.state
    now = scope.now
    orders = s.orders
    recency = math.exp(-max(0.0, now - s.last_order_at) / (30 * _DAY)) if orders else 0.0
    first = s.first_seen
    tenure = 1.0 - math.exp(-max(0.0, now - first) / (90 * _DAY)) if first > 0 else 0.0
    cart_value = 0.0
    for line in s.cart.values():
        cart_value += line.price * line.quantity
    order_value = s.revenue / orders if orders else 0.0
    return (
        1.0,
        0.0 if s.customer_id.startswith("anon:") else 1.0,
        1.0 if orders else 0.0,
        min(1.0, math.log1p(orders) / _LOG21),
        recency,
        tenure,
        min(1.0, math.log1p(s.sessions) / _LOG51),
        min(1.0, s.event_counts.get("product_view", 0) / max(1, s.sessions) / 10.0),
        1.0 if s.cart else 0.0,
        min(1.0, math.log1p(max(0.0, cart_value)) / _LOG501),
        min(1.0, math.log1p(max(0.0, order_value)) / _LOG501),
        _tier(scope),
    )


def _tier(scope: Scope) -> float:
    tier = scope.state.tier
    tiers = scope.loyalty.tiers
    last = len(tiers) - 1
    if last < 1 or not tier:
        return 0.0
    for rank, t in enumerate(tiers):
        if t.name == tier:
            return rank / last
    return 0.0
