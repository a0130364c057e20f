"""Score features: defined for every customer, as of a given time, read-only."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import msgspec

from engine import events as ev
from engine.customer import Engine
from engine.profile import CustomerState
from engine.scores import FEATURES, as_dict, features

DAY = 86400.0
T0 = 1_700_000_000.0


def at(day: float) -> datetime:
    return datetime.fromtimestamp(T0 + day * DAY, tz=UTC)


def shopper() -> CustomerState:
    engine = Engine()
    state = None
    for n, day in enumerate((0, 10, 20, 40)):
        state, _ = engine.apply(
            state,
            ev.OrderPlaced(
                event_id=f"o{n}", customer_id="c", timestamp=at(day), order_id=f"o{n}", total=25.0
            ),
        )
    state, _ = engine.apply(
        state,
        ev.AddToCart(event_id="a", customer_id="c", timestamp=at(41), sku="s", price=10.0),
    )
    assert state is not None
    return state


def test_one_finite_number_per_named_feature() -> None:
    x = features(shopper(), T0 + 41 * DAY)
    assert len(x) == len(FEATURES) == len(set(FEATURES))
    assert all(math.isfinite(v) for v in x)
    named = as_dict(x)
    assert named["has_ordered"] == 1.0 and named["cart_open"] == 1.0
    assert named["log_orders"] == math.log1p(4)
    assert named["log_days_since_order"] == math.log1p(1.0)
    assert named["log_mean_gap_days"] == math.log1p(40 / 3)
    assert named["log_orders_30d"] == math.log1p(2)  # days 20 and 40, as of day 41


def test_a_new_visitor_has_features_too() -> None:
    engine = Engine()
    state, _ = engine.apply(
        None, ev.ProductView(event_id="v", customer_id="n", timestamp=at(0), sku="s")
    )
    named = as_dict(features(state, T0 + 3 * DAY))
    assert named["has_ordered"] == 0.0 and named["log_orders"] == 0.0
    assert named["log_views"] == math.log1p(1) and named["recent_views_7d"] == 1.0
    assert named["log_days_since_order"] == math.log1p(3.0)  # since first seen


def test_time_passing_ages_the_customer_without_touching_the_state() -> None:
    state = shopper()
    before = msgspec.msgpack.encode(state)
    soon = as_dict(features(state, T0 + 41 * DAY))
    later = as_dict(features(state, T0 + 200 * DAY))
    assert later["log_days_since_order"] > soon["log_days_since_order"]
    assert later["overdue"] > soon["overdue"]
    assert later["log_orders_90d"] == 0.0 and later["recent_views_7d"] == 0.0
    assert msgspec.msgpack.encode(state) == before
