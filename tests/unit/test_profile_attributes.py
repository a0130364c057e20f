"""Every profile attribute the engine keeps, checked through ``Engine.apply``.

The serving view (``profile_view`` / ``parse_view``) is what marketers and the
API read, so each attribute is checked both on the state and, where it is
served, on the view. Event time rather than arrival order decides wherever the
engine promises it does, so several tests deliver events late or out of order.
"""

from __future__ import annotations

import copy
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import events as ev
from engine.customer import Effect, Engine, SegmentsChanged
from engine.loyalty import DEFAULT_PROGRAM, LoyaltyError, LoyaltyProgram, Tier
from engine.merge import merge_states
from engine.profile import (
    AFFINITY_TAU_S,
    MAX_ORDERS_KEPT,
    SESSION_GAP_S,
    CustomerState,
    Decayed,
    Engagement,
    OrderRecord,
    parse_view,
    profile_view,
)
from engine.segments import SEGMENTS, segments_of

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86400.0
RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


# Event builders ---------------------------------------------------------------


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def page(eid: str, ts: float, customer: str = "c1") -> ev.PageView:
    return ev.PageView(event_id=eid, customer_id=customer, timestamp=at(ts))


def view(eid: str, ts: float, category: str | None = "shoes", sku: str = "s1") -> ev.ProductView:
    return ev.ProductView(
        event_id=eid, customer_id="c1", timestamp=at(ts), sku=sku, category=category
    )


def add(
    eid: str,
    ts: float,
    sku: str = "s1",
    qty: int = 1,
    price: float = 10.0,
    category: str | None = None,
) -> ev.AddToCart:
    return ev.AddToCart(
        event_id=eid,
        customer_id="c1",
        timestamp=at(ts),
        sku=sku,
        quantity=qty,
        price=price,
        category=category,
        name=f"name-{sku}",
    )


def order(
    eid: str,
    ts: float,
    total: float = 10.0,
    order_id: str | None = None,
    categories: tuple[str | None, ...] = (),
    customer: str = "c1",
) -> ev.OrderPlaced:
    items = tuple(ev.LineItem(sku=f"s{i}", price=1.0, category=c) for i, c in enumerate(categories))
    return ev.OrderPlaced(
        event_id=eid,
        customer_id=customer,
        timestamp=at(ts),
        order_id=order_id or f"o-{eid}",
        total=total,
        items=items,
    )


def refund(eid: str, ts: float, order_id: str, amount: float | None = None) -> ev.OrderRefunded:
    return ev.OrderRefunded(
        event_id=eid, customer_id="c1", timestamp=at(ts), order_id=order_id, amount=amount
    )


def adjust(eid: str, ts: float, points: int) -> ev.LoyaltyPointsAdjusted:
    return ev.LoyaltyPointsAdjusted(event_id=eid, customer_id="c1", timestamp=at(ts), points=points)


def identify(eid: str, ts: float, **traits: str) -> ev.Identify:
    return ev.Identify(event_id=eid, customer_id="c1", timestamp=at(ts), traits=ev.Traits(**traits))


def message(
    kind: type[ev.MessageSent]
    | type[ev.MessageOpened]
    | type[ev.MessageClicked]
    | type[ev.MessageBounced]
    | type[ev.MessageUnsubscribed],
    eid: str,
    ts: float,
    channel: ev.MessageChannel,
) -> ev.BaseEvent:
    return kind(
        event_id=eid,
        customer_id="c1",
        timestamp=at(ts),
        message_id=f"m-{eid}",
        message_channel=channel,
    )


def consent(eid: str, ts: float, channel: ev.MessageChannel, granted: bool) -> ev.ConsentChanged:
    return ev.ConsentChanged(
        event_id=eid, customer_id="c1", timestamp=at(ts), consent_channel=channel, granted=granted
    )


def run(
    events: list[ev.BaseEvent], engine: Engine | None = None
) -> tuple[CustomerState, list[Effect]]:
    """Apply events in the given (arrival) order, each at its own event time."""
    engine = engine or Engine()
    state: CustomerState | None = None
    effects: list[Effect] = []
    for event in events:
        state, out = engine.apply(state, event)
        effects += out
    assert state is not None
    return state, effects


def served(state: CustomerState, window_s: float = DEFAULT_PROGRAM.window_s) -> dict[str, Any]:
    return parse_view(profile_view(state, window_s))


def segment_changes(effects: list[Effect]) -> list[SegmentsChanged]:
    return [e for e in effects if isinstance(e, SegmentsChanged)]


# Sessions ---------------------------------------------------------------------


def test_a_gap_of_more_than_thirty_minutes_starts_a_new_session() -> None:
    """Sessions drive engagement metrics; a pause longer than the gap is a new visit."""
    later = T0 + SESSION_GAP_S + 1
    state, _ = run([page("e1", T0), page("e2", later), page("e3", later + 60)])
    assert state.sessions == 2
    assert state.session_started_at == later
    assert served(state)["sessions"] == 2


def test_events_within_the_gap_stay_in_one_session() -> None:
    """Exactly the gap is not 'more than' the gap: a steady browser is one session."""
    state, _ = run([page("e1", T0), page("e2", T0 + SESSION_GAP_S), page("e3", T0 + 2 * 1800)])
    assert state.sessions == 1
    assert state.session_started_at == T0


def test_a_late_older_event_neither_starts_a_session_nor_moves_its_start() -> None:
    """An event delivered late belongs to the past, not to a new visit now."""
    state, _ = run([page("e1", T0 + 10 * SESSION_GAP_S), page("e2", T0)])
    assert state.sessions == 1
    assert state.session_started_at == T0 + 10 * SESSION_GAP_S


# Counts and seen times ----------------------------------------------------------


def test_counts_by_type_and_seen_times_follow_event_time() -> None:
    """first/last seen are min/max of event time, so arrival order must not matter."""
    state, _ = run([page("e1", T0 + 50), view("e2", T0 + 100), page("e3", T0), add("e4", T0 + 20)])
    assert state.events_total == 4
    assert state.event_counts == {"page_view": 2, "product_view": 1, "add_to_cart": 1}
    assert (state.first_seen, state.last_seen) == (T0, T0 + 100)
    view_ = served(state)
    assert view_["event_counts"] == state.event_counts
    assert (view_["first_seen"], view_["last_seen"], view_["events_total"]) == (T0, T0 + 100, 4)


def test_a_duplicate_event_is_not_counted_again() -> None:
    """A producer retry must not inflate counts."""
    state, _ = run([page("e1", T0), page("e1", T0)])
    assert state.events_total == 1
    assert state.event_counts == {"page_view": 1}
    assert state.duplicates == 1


# Category affinity ------------------------------------------------------------


def test_affinity_weighs_view_one_cart_three_and_each_order_line_five() -> None:
    """Stronger intent counts more; every order line of a category counts."""
    state, _ = run(
        [
            view("e1", T0, category="shoes"),
            add("e2", T0, category="hats"),
            order("e3", T0, categories=("bags", "bags", None)),
            view("e4", T0, category=None),
        ]
    )
    assert state.affinity == {
        "shoes": Decayed(1.0, T0),
        "hats": Decayed(3.0, T0),
        "bags": Decayed(10.0, T0),
    }
    assert served(state)["category_affinity"] == {"shoes": 1.0, "hats": 3.0, "bags": 10.0}
    assert state.category_views == {"shoes": 1}


def test_a_category_viewed_long_ago_ranks_below_one_viewed_recently() -> None:
    """Affinity decays with tau, so old interest fades behind fresh interest."""
    state, _ = run([view("e1", T0, category="old"), view("e2", T0 + 20 * DAY, category="new")])
    now = state.last_seen
    assert state.affinity["old"].at_time(now) == pytest.approx(math.exp(-20 * DAY / AFFINITY_TAU_S))
    assert state.affinity["new"].at_time(now) == pytest.approx(1.0)
    affinity = served(state)["category_affinity"]
    assert affinity["new"] > affinity["old"]
    assert affinity["old"] == round(math.exp(-20 * DAY / AFFINITY_TAU_S), 4)


def test_repeated_interest_accumulates_with_decay() -> None:
    """A second view decays the first to the new time, then adds its own weight."""
    state, _ = run([view("e1", T0), view("e2", T0 + AFFINITY_TAU_S)])
    assert state.affinity["shoes"].at == T0 + AFFINITY_TAU_S
    assert state.affinity["shoes"].value == pytest.approx(1.0 + math.exp(-1.0))


def test_a_late_older_event_adds_its_weight_decayed_to_the_current_time() -> None:
    """Arrival order must not change the score: a late view counts as it would have."""
    in_order, _ = run([view("e1", T0), view("e2", T0 + 10 * DAY)])
    late, _ = run([view("e2", T0 + 10 * DAY), view("e1", T0)])
    assert late.affinity["shoes"].at == T0 + 10 * DAY
    assert late.affinity["shoes"].value == pytest.approx(1.0 + math.exp(-10 * DAY / AFFINITY_TAU_S))
    assert late.affinity["shoes"].value == pytest.approx(in_order.affinity["shoes"].value)


def test_decayed_at_time_decays_forward_and_never_grows_backward() -> None:
    """Reading a score before its last update must not inflate it."""
    score = Decayed(2.0, T0)
    assert score.at_time(T0) == 2.0
    assert score.at_time(T0 + AFFINITY_TAU_S) == pytest.approx(2.0 / math.e)
    assert score.at_time(T0 - AFFINITY_TAU_S) == 2.0


# Cart -------------------------------------------------------------------------


def test_cart_holds_items_quantity_value_and_update_time() -> None:
    """The abandoned-cart message and the API both read these fields."""
    state, _ = run(
        [
            add("e1", T0, sku="a", qty=2, price=2.5, category="mugs"),
            add("e2", T0 + 10, sku="b", qty=1, price=4.0),
            add("e3", T0 + 5, sku="a", qty=1, price=2.5),  # late, same SKU: adds quantity
        ]
    )
    assert state.cart_quantity == 4
    assert state.cart_value == 11.5
    assert state.cart_updated_at == T0 + 10
    view_ = served(state)
    assert view_["cart"] == [
        {"sku": "a", "quantity": 3, "price": 2.5, "category": "mugs", "name": "name-a"},
        {"sku": "b", "quantity": 1, "price": 4.0, "category": None, "name": "name-b"},
    ]
    assert (view_["cart_quantity"], view_["cart_value"]) == (4, 11.5)
    assert view_["cart_updated_at"] == T0 + 10


def test_an_order_empties_the_cart_it_bought() -> None:
    """An order at or after the last cart change buys that cart."""
    state, _ = run([add("e1", T0), order("e2", T0)])
    assert state.cart == {}
    assert served(state)["cart"] == []


def test_a_late_order_older_than_the_last_cart_update_keeps_the_cart() -> None:
    """Lines added after the order was placed were not bought."""
    state, _ = run([add("e1", T0 + 100), order("e2", T0 + 50)])
    assert state.cart_quantity == 1
    assert state.cart_updated_at == T0 + 100


# Orders -----------------------------------------------------------------------


def test_orders_revenue_average_and_last_order_at() -> None:
    """Totals add up; the last order is the latest by event time, not by arrival."""
    state, _ = run([order("e1", T0 + 100, total=30.0), order("e2", T0, total=15.0)])
    assert (state.orders, state.revenue, state.last_order_at) == (2, 45.0, T0 + 100)
    view_ = served(state)
    assert view_["orders"] == 2
    assert view_["revenue"] == 45.0
    assert view_["average_order_value"] == 22.5
    assert view_["last_order_at"] == T0 + 100


def test_order_history_is_sorted_by_time_and_capped() -> None:
    """Only the newest MAX_ORDERS_KEPT orders are kept, whatever the arrival order."""
    n = MAX_ORDERS_KEPT + 5
    offsets = list(range(n))
    random.Random(7).shuffle(offsets)
    state, _ = run([order(f"e{i}", T0 + i, total=1.0) for i in offsets])
    assert state.orders == n
    assert len(state.order_history) == MAX_ORDERS_KEPT
    assert [o.ts for o in state.order_history] == [T0 + i for i in range(5, n)]
    assert state.order_history[0] == OrderRecord("o-e5", T0 + 5, 1.0, points=1)


def test_orders_and_spend_in_the_window_are_relative_to_last_seen() -> None:
    """orders_12m/spend_12m follow event time, so a replay serves the same figures."""
    year = DEFAULT_PROGRAM.window_s
    state, _ = run(
        [
            order("e1", T0 - year - 1, total=100.0),  # just outside the window
            order("e2", T0 - year, total=40.0),  # the window's edge counts
            order("e3", T0, total=60.0),
            refund("e4", T0, "o-e3", amount=10.0),
        ]
    )
    view_ = served(state)
    assert view_["orders_12m"] == 2
    assert view_["spend_12m"] == 90.0
    assert view_["orders"] == 3
    assert view_["revenue"] == 190.0
    # A shorter programme window only changes the windowed figures.
    short = served(state, window_s=30 * DAY)
    assert (short["orders_12m"], short["spend_12m"], short["revenue"]) == (1, 50.0, 190.0)


# Refunds ----------------------------------------------------------------------


def test_a_partial_then_a_whole_refund() -> None:
    """An amount refunds part; no amount refunds what is left of the order."""
    state, _ = run([order("e1", T0, total=100.0, order_id="o1"), refund("e2", T0 + 1, "o1", 30.0)])
    assert state.revenue == 70.0
    assert state.order_history[0].refunded == 30.0
    assert state.loyalty_points == 70
    state, _ = Engine().apply(state, refund("e3", T0 + 2, "o1"))
    assert state.revenue == 0.0
    assert state.order_history[0].refunded == 100.0
    assert state.refunds == 2
    assert state.loyalty_points == 0
    assert served(state)["refunds"] == 2


def test_a_refund_never_exceeds_what_is_left_of_the_order() -> None:
    """Over-refunds (duplicated back-office entries) must not make revenue negative."""
    state, _ = run(
        [
            order("e1", T0, total=50.0, order_id="o1"),
            refund("e2", T0 + 1, "o1", 20.0),
            refund("e3", T0 + 2, "o1", 500.0),
            refund("e4", T0 + 3, "o1"),
        ]
    )
    assert state.revenue == 0.0
    assert state.order_history[0].refunded == 50.0
    assert state.refunds == 3


def test_a_refund_of_an_unknown_order_uses_the_events_amount() -> None:
    """Orders before Pulse or beyond the history are refunded at face value."""
    state, _ = run([order("e1", T0, total=80.0), refund("e2", T0 + 1, "older-order", 30.0)])
    assert state.revenue == 50.0
    assert state.loyalty_points == 50
    assert state.order_history[0].refunded == 0.0
    # Without an amount there is nothing to refund.
    state, _ = Engine().apply(state, refund("e3", T0 + 2, "older-order"))
    assert state.revenue == 50.0
    assert state.refunds == 2


def test_refunds_take_back_loyalty_points_but_never_below_zero() -> None:
    """Points already spent (adjusted away) cannot go negative on a refund."""
    state, _ = run(
        [
            order("e1", T0, total=100.0, order_id="o1"),
            adjust("e2", T0 + 1, -90),
            refund("e3", T0 + 2, "o1"),
        ]
    )
    assert state.loyalty_points == 0
    state, _ = Engine().apply(state, refund("e4", T0 + 3, "unknown", 1000.0))
    assert state.loyalty_points == 0
    assert state.revenue == -1000.0


def test_partial_refunds_of_a_whole_order_take_back_all_its_points() -> None:
    """loyalty.yaml: refunds take the earned points back; in parts as much as in one go."""
    state, _ = run(
        [
            order("e1", T0, total=10.0, order_id="o1"),
            refund("e2", T0 + 1, "o1", 2.5),
            refund("e3", T0 + 2, "o1", 2.5),
            refund("e4", T0 + 3, "o1", 5.0),
        ]
    )
    assert state.order_history[0].refunded == 10.0
    assert state.loyalty_points == 0


def test_a_refund_delivered_before_its_order_still_refunds_it() -> None:
    """Event time decides elsewhere; a refund overtaking its order must not be lost."""
    placed = order("e1", T0, total=100.0, order_id="o1")
    refunded = refund("e2", T0 + 3600, "o1")
    in_order, _ = run([placed, refunded])
    overtaken, _ = run([refunded, placed])
    assert in_order.revenue == 0.0
    assert overtaken.revenue == in_order.revenue
    assert overtaken.order_history == in_order.order_history
    assert overtaken.loyalty_points == in_order.loyalty_points
    assert served(overtaken)["spend_12m"] == served(in_order)["spend_12m"]


# Loyalty points and tiers -------------------------------------------------------


def test_points_follow_points_per_unit_of_the_programme() -> None:
    """Points are whole: the programme's rate times the total, truncated."""
    state, _ = run([order("e1", T0, total=10.75)])
    assert DEFAULT_PROGRAM.points_per_unit == 1.0
    assert state.loyalty_points == 10
    double = Engine(loyalty=LoyaltyProgram(points_per_unit=2.0))
    state, _ = run([order("e1", T0, total=10.75)], engine=double)
    assert state.loyalty_points == 21
    assert served(state)["loyalty_points"] == 21


def test_loyalty_points_adjusted_adds_and_never_goes_negative() -> None:
    """Manual corrections can grant or take points, but a balance is never negative."""
    state, _ = run([order("e1", T0, total=20.0), adjust("e2", T0 + 1, 50)])
    assert state.loyalty_points == 70
    state, _ = Engine().apply(state, adjust("e3", T0 + 2, -1000))
    assert state.loyalty_points == 0


def test_tier_follows_rolling_spend_and_keeps_the_previous_tier() -> None:
    """Thresholds are inclusive; the previous tier feeds tier-upgrade rules."""
    state, _ = run([page("e1", T0)])
    assert (state.tier, state.previous_tier, state.tier_changed_at) == ("member", "", T0)
    state, _ = Engine().apply(state, order("e2", T0 + 10, total=249.0))
    assert state.tier == "member"
    assert state.tier_changed_at == T0
    state, _ = Engine().apply(state, order("e3", T0 + 20, total=1.0))
    assert (state.tier, state.previous_tier, state.tier_changed_at) == (
        "silver",
        "member",
        T0 + 20,
    )
    state, _ = Engine().apply(state, order("e4", T0 + 30, total=4750.0))
    assert (state.tier, state.previous_tier, state.tier_changed_at) == (
        "platinum",
        "silver",
        T0 + 30,
    )
    view_ = served(state)
    assert (view_["tier"], view_["previous_tier"], view_["tier_changed_at"]) == (
        "platinum",
        "silver",
        T0 + 30,
    )


def test_tier_drops_when_old_orders_leave_the_window() -> None:
    """The window slides with event time, so later activity can downgrade the tier."""
    window = DEFAULT_PROGRAM.window_s
    state, _ = run([order("e1", T0, total=1200.0), order("e2", T0 + 100 * DAY, total=300.0)])
    assert state.tier == "gold"
    state, _ = Engine().apply(state, page("e3", T0 + window + DAY))
    assert (state.tier, state.previous_tier, state.tier_changed_at) == (
        "silver",
        "gold",
        T0 + window + DAY,
    )
    later = T0 + 100 * DAY + window + DAY
    state, _ = Engine().apply(state, page("e4", later))
    assert (state.tier, state.previous_tier) == ("member", "silver")


def test_a_refund_can_downgrade_the_tier() -> None:
    """Refunded spend is not spend."""
    state, _ = run([order("e1", T0, total=300.0, order_id="o1"), refund("e2", T0 + 1, "o1", 60.0)])
    assert (state.tier, state.previous_tier) == ("member", "silver")


def test_a_shorter_programme_window_and_custom_tiers() -> None:
    """The programme from loyalty.yaml, not the default, decides tiers."""
    program = LoyaltyProgram(window_days=30, tiers=(Tier("basic", 0.0), Tier("vip", 100.0)))
    engine = Engine(loyalty=program)
    state, _ = run([order("e1", T0, total=100.0)], engine=engine)
    assert state.tier == "vip"
    state, _ = engine.apply(state, page("e2", T0 + 31 * DAY))
    assert (state.tier, state.previous_tier) == ("basic", "vip")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"tiers": []}, "tiers"),
        ({"tiers": [{"name": "a", "min_spend": 0}, {"name": "b", "min_spend": 0}]}, "tiers"),
        (
            {
                "tiers": [
                    {"name": "a", "min_spend": 0},
                    {"name": "b", "min_spend": 200},
                    {"name": "c", "min_spend": 100},
                ]
            },
            "tiers",
        ),
        ({"tiers": [{"name": "a", "min_spend": 10}]}, "tiers"),
        ({"colour": "red"}, "colour"),
        ({"tiers": [{"name": "a", "min_spend": 0, "perks": 1}]}, "perks"),
        ({"tiers": [{"name": "a", "min_spend": -1}]}, "min_spend"),
        ({"tiers": [{"name": "", "min_spend": 0}]}, "name"),
        ({"window_days": 0}, "window_days"),
        ({"points_per_unit": -1}, "points_per_unit"),
    ],
)
def test_invalid_programmes_are_rejected_naming_the_field(data: Any, field: str) -> None:
    """A marketer's typo must fail at start-up with a message that points at it."""
    with pytest.raises(LoyaltyError, match=field) as info:
        LoyaltyProgram.from_mapping(data, source="rules/loyalty.yaml")
    assert str(info.value).startswith("rules/loyalty.yaml: ")


def test_the_shipped_loyalty_yaml_loads_as_the_default_programme() -> None:
    """rules/loyalty.yaml documents the defaults; it must parse and agree with them."""
    data = yaml.safe_load((RULES_DIR / "loyalty.yaml").read_text())
    program = LoyaltyProgram.from_mapping(data)
    assert program == DEFAULT_PROGRAM
    assert [t.name for t in program.tiers] == ["member", "silver", "gold", "platinum"]
    assert program.window_s == 365 * DAY


def test_an_infinite_points_rate_is_rejected_at_load() -> None:
    """Validation exists so that a bad file fails at start-up, not on every order."""
    with pytest.raises(LoyaltyError, match="points_per_unit"):
        program = LoyaltyProgram.from_mapping(yaml.safe_load("points_per_unit: .inf"))
        Engine(loyalty=program).apply(None, order("e1", T0, total=10.0))


# Preferred channel and message consent ------------------------------------------


def test_clicks_weigh_more_than_opens() -> None:
    """Two opens on e-mail lose to one click on push."""
    state, _ = run(
        [
            message(ev.MessageOpened, "e1", T0, "email"),
            message(ev.MessageOpened, "e2", T0 + 1, "email"),
            message(ev.MessageClicked, "e3", T0, "push"),
        ]
    )
    assert state.engagement["email"] == Engagement(opened=2, last_at=T0 + 1)
    assert state.engagement["push"] == Engagement(clicked=1, last_at=T0)
    assert state.preferred_channel == "push"
    assert served(state)["preferred_channel"] == "push"


def test_bounces_count_against_a_channel() -> None:
    """A channel that bounces is not where the customer is best reached."""
    state, _ = run(
        [
            message(ev.MessageClicked, "e1", T0, "email"),
            message(ev.MessageBounced, "e2", T0 + 1, "email"),
            message(ev.MessageBounced, "e3", T0 + 2, "email"),
            message(ev.MessageOpened, "e4", T0, "sms"),
        ]
    )
    assert state.engagement["email"].bounced == 2
    assert state.preferred_channel == "sms"


def test_no_positive_engagement_means_no_preferred_channel() -> None:
    """Sends alone show nothing, and a negative score must not win by default."""
    assert CustomerState(customer_id="c1").preferred_channel == ""
    state, _ = run(
        [message(ev.MessageSent, "e1", T0, "email"), message(ev.MessageBounced, "e2", T0, "sms")]
    )
    assert state.engagement["email"].sent == 1
    assert state.preferred_channel == ""
    assert served(state)["preferred_channel"] == ""


def test_equal_scores_prefer_the_most_recent_engagement() -> None:
    """Ties go to the channel used last, by event time."""
    state, _ = run(
        [
            message(ev.MessageOpened, "e1", T0 + 10, "sms"),
            message(ev.MessageOpened, "e2", T0, "email"),
        ]
    )
    assert state.preferred_channel == "sms"


def test_unsubscribe_withdraws_consent_for_that_channel_only() -> None:
    """An unsubscribe link is a consent decision for the message's channel."""
    state, _ = run(
        [
            consent("e1", T0, "email", True),
            consent("e2", T0, "sms", True),
            message(ev.MessageUnsubscribed, "e3", T0 + 1, "email"),
        ]
    )
    assert {ch: c.granted for ch, c in state.consent.items()} == {"email": False, "sms": True}
    assert served(state)["consent"] == {"email": False, "sms": True}


def test_a_late_older_unsubscribe_does_not_override_a_newer_opt_in() -> None:
    """The later decision by event time wins, whenever it arrives."""
    state, _ = run(
        [consent("e1", T0 + 100, "email", True), message(ev.MessageUnsubscribed, "e2", T0, "email")]
    )
    assert state.consent["email"].granted is True


# Preferred hour -----------------------------------------------------------------


def test_preferred_hour_is_local_to_the_customers_time_zone() -> None:
    """23:30 UTC is 08:30 in Tokyo: send-time optimisation needs the local hour."""
    late_evening_utc = datetime(2023, 11, 14, 23, 30, tzinfo=UTC).timestamp()
    state, _ = run(
        [
            identify("e1", late_evening_utc - 12 * 3600, timezone="Asia/Tokyo"),
            page("e2", late_evening_utc),
            page("e3", late_evening_utc + 60),
        ]
    )
    assert state.active_hours[8] == 2
    assert state.active_hours[23] == 0
    assert state.preferred_hour == 8
    assert served(state)["preferred_hour"] == 8


@pytest.mark.parametrize("timezone", [None, "Not/AZone", "", "../etc", "Europe/"])
def test_preferred_hour_falls_back_to_utc(timezone: str | None) -> None:
    """An unknown or invalid zone must not fail the event; UTC is the fallback."""
    ts = datetime(2023, 11, 14, 23, 30, tzinfo=UTC).timestamp()
    first: list[ev.BaseEvent] = [] if timezone is None else [identify("e1", ts, timezone=timezone)]
    state, _ = run([*first, page("e2", ts), page("e3", ts + 60)])
    assert state.active_hours[23] == len(first) + 2
    assert state.preferred_hour == 23


def test_preferred_hour_is_minus_one_without_events() -> None:
    """A profile with no activity has no preferred hour, not hour 0."""
    empty = CustomerState(customer_id="c1")
    assert empty.preferred_hour == -1
    assert served(empty)["preferred_hour"] == -1


def test_preferred_hour_ties_go_to_the_earliest_hour() -> None:
    """Deterministic ties keep the served value stable across replays."""
    base = datetime(2023, 11, 14, 0, 0, tzinfo=UTC).timestamp()
    state, _ = run([page("e1", base + 15 * 3600), page("e2", base + 9 * 3600)])
    assert state.preferred_hour == 9


def test_the_identify_that_sets_the_time_zone_is_counted_in_it() -> None:
    """The zone is known as of that event: its own hour should be local too."""
    ts = datetime(2023, 11, 14, 23, 30, tzinfo=UTC).timestamp()
    state, _ = run([identify("e1", ts, timezone="Asia/Tokyo")])
    assert state.active_hours[8] == 1


# Consent, tickets, traits -------------------------------------------------------


def test_consent_is_decided_by_event_time_not_arrival() -> None:
    """A back-office sync of an old decision must not reverse a newer one."""
    state, _ = run([consent("e1", T0 + 100, "email", False), consent("e2", T0, "email", True)])
    assert state.consent["email"].granted is False
    assert state.consent["email"].ts == T0 + 100
    state, _ = Engine().apply(state, consent("e3", T0 + 200, "email", True))
    assert served(state)["consent"] == {"email": True}


def test_open_support_tickets_are_tracked_without_duplicates() -> None:
    """Reopening a ticket twice or closing an unknown one must not corrupt the list."""

    def opened(eid: str, ticket: str) -> ev.SupportTicketOpened:
        return ev.SupportTicketOpened(
            event_id=eid, customer_id="c1", timestamp=at(T0), ticket_id=ticket
        )

    def closed(eid: str, ticket: str) -> ev.SupportTicketClosed:
        return ev.SupportTicketClosed(
            event_id=eid, customer_id="c1", timestamp=at(T0), ticket_id=ticket
        )

    state, _ = run([opened("e1", "t1"), opened("e2", "t2"), opened("e3", "t1"), closed("e4", "t9")])
    assert state.open_tickets == ["t1", "t2"]
    state, _ = Engine().apply(state, closed("e5", "t1"))
    assert served(state)["open_tickets"] == ["t2"]


def test_identify_sets_traits_and_absent_ones_do_not_erase() -> None:
    """Partial identify calls (only a phone) must keep the e-mail learned before."""
    state, _ = run(
        [
            identify("e1", T0, email="a@example.com", timezone="Europe/Amsterdam"),
            identify("e2", T0 + 1, phone="+31600000000", timezone="Asia/Tokyo"),
        ]
    )
    assert state.traits == {
        "email": "a@example.com",
        "phone": "+31600000000",
        "timezone": "Asia/Tokyo",
    }
    assert served(state)["traits"] == state.traits


# Segments ---------------------------------------------------------------------


def test_segments_changed_is_emitted_only_when_membership_changes() -> None:
    """The Redis sets are written from these effects; no change must mean no write."""
    engine = Engine()
    state, effects = engine.apply(None, page("e1", T0))
    assert segment_changes(effects) == [
        SegmentsChanged("c1", ("identified", "prospect", "tier:member"), ())
    ]
    state, effects = engine.apply(state, page("e2", T0 + 1))
    assert segment_changes(effects) == []
    state, effects = engine.apply(state, add("e3", T0 + 2))
    assert segment_changes(effects) == [SegmentsChanged("c1", ("active_cart",), ())]
    state, effects = engine.apply(state, order("e4", T0 + 3))
    assert segment_changes(effects) == [
        SegmentsChanged("c1", ("first_time_buyer",), ("active_cart", "prospect"))
    ]
    assert state.segments == segments_of(state)
    assert served(state)["segments"] == ["first_time_buyer", "identified", "tier:member"]


def test_tier_segment_follows_the_tier() -> None:
    """Marketers target tiers as segments, so a tier change moves the customer."""
    state, effects = run([order("e1", T0, total=10.0), order("e2", T0 + 1, total=300.0)])
    assert segment_changes(effects)[-1] == SegmentsChanged(
        "c1", ("repeat_buyer", "tier:silver"), ("first_time_buyer", "tier:member")
    )
    assert "tier:silver" in state.segments


def test_email_reachable_needs_an_email_and_email_consent() -> None:
    """Only customers we may mail and can mail are in the e-mail audience."""
    state, effects = run([identify("e1", T0, email="a@example.com")])
    assert "email_reachable" not in state.segments
    state, effects = Engine().apply(state, consent("e2", T0 + 1, "email", True))
    assert segment_changes(effects) == [SegmentsChanged("c1", ("email_reachable",), ())]
    state, effects = Engine().apply(state, message(ev.MessageUnsubscribed, "e3", T0 + 2, "email"))
    assert segment_changes(effects) == [SegmentsChanged("c1", (), ("email_reachable",))]


def test_anonymous_visitors_are_not_identified_and_tickets_make_a_segment() -> None:
    """Anonymous profiles must stay out of the identified audience."""
    ticket = ev.SupportTicketOpened(
        event_id="e1", anonymous_id="a1", timestamp=at(T0), ticket_id="t1"
    )
    state, _ = Engine().apply(None, ticket)
    assert state.segments == ["prospect", "open_support_ticket", "tier:member"]
    assert set(state.segments) - {"tier:member"} <= set(SEGMENTS)


# Property tests: orders and refunds ---------------------------------------------

# Quarters are exact binary fractions, so sums do not depend on their order and
# tier thresholds can be compared exactly.
money = st.integers(0, 8000).map(lambda q: q / 4)


@st.composite
def order_flows(draw: st.DrawFn, max_size: int = 30) -> list[ev.BaseEvent]:
    """Orders and refunds for one customer in an arrival order where a refund of a
    placed order arrives after it; refunds of unknown orders may come at any point.
    Event times are distinct, random and up to two years apart."""
    n = draw(st.integers(0, max_size))
    offsets = draw(st.lists(st.integers(0, 730 * 86400), min_size=n, max_size=n, unique=True))
    events: list[ev.BaseEvent] = []
    placed: list[str] = []
    for i, offset in enumerate(offsets):
        ts = T0 + offset
        kind = draw(st.sampled_from(["order", "order", "refund", "unknown_refund"]))
        if kind == "order" or (kind == "refund" and not placed):
            events.append(order(f"e{i}", ts, total=draw(money), order_id=f"o{i}"))
            placed.append(f"o{i}")
        else:
            target = draw(st.sampled_from(placed)) if kind == "refund" else f"unknown{i}"
            events.append(refund(f"e{i}", ts, target, draw(st.none() | money)))
    return events


def expected_revenue(events: list[ev.BaseEvent]) -> tuple[float, float]:
    """The reference model: (revenue, refunds applied to unknown orders)."""
    left: dict[str, float] = {}
    revenue = unknown = 0.0
    for e in events:
        if isinstance(e, ev.OrderPlaced):
            left[e.order_id] = e.total
            revenue += e.total
        elif isinstance(e, ev.OrderRefunded):
            if e.order_id in left:
                r = min(left[e.order_id] if e.amount is None else e.amount, left[e.order_id])
                left[e.order_id] -= r
            else:
                r = e.amount or 0.0
                unknown += r
            revenue -= r
    return revenue, unknown


def reorder(events: list[ev.BaseEvent], rnd: random.Random) -> list[ev.BaseEvent]:
    """Another arrival order that still delivers each order before its refunds."""
    order_ids = {e.order_id for e in events if isinstance(e, ev.OrderPlaced)}
    pending = list(events)
    delivered: set[str] = set()
    out: list[ev.BaseEvent] = []
    while pending:
        ready = [
            e
            for e in pending
            if not isinstance(e, ev.OrderRefunded)
            or e.order_id not in order_ids
            or e.order_id in delivered
        ]
        pick = rnd.choice(ready)
        pending.remove(pick)
        if isinstance(pick, ev.OrderPlaced):
            delivered.add(pick.order_id)
        out.append(pick)
    return out


@given(order_flows())
@settings(max_examples=80, deadline=None)
def test_revenue_is_totals_minus_applied_refunds(events: list[ev.BaseEvent]) -> None:
    """Revenue must be exactly the money kept: totals less what was actually refunded."""
    if not events:
        return
    state, _ = run(events)
    revenue, unknown = expected_revenue(events)
    totals = sum(e.total for e in events if isinstance(e, ev.OrderPlaced))
    assert state.revenue == pytest.approx(revenue, abs=1e-6)
    assert state.revenue >= -unknown - 1e-6
    assert state.revenue <= totals + 1e-6
    assert state.loyalty_points >= 0
    assert state.orders == sum(isinstance(e, ev.OrderPlaced) for e in events)
    assert state.refunds == sum(isinstance(e, ev.OrderRefunded) for e in events)
    history = state.order_history
    assert [o.ts for o in history] == sorted(o.ts for o in history)
    assert all(0.0 <= o.refunded <= o.total for o in history)
    if not any(
        isinstance(e, ev.OrderRefunded) and e.order_id.startswith("unknown") for e in events
    ):
        assert len(history) == state.orders < MAX_ORDERS_KEPT
        assert sum(o.total - o.refunded for o in history) == pytest.approx(state.revenue)


@given(order_flows(), st.randoms(use_true_random=False))
@settings(max_examples=80, deadline=None)
def test_arrival_order_does_not_change_orders_revenue_tier_or_history(
    events: list[ev.BaseEvent], rnd: random.Random
) -> None:
    """Replays and partition rebalancing reorder events; the profile must not care."""
    if not events:
        return
    first, _ = run(events)
    second, _ = run(reorder(events, rnd))
    assert second.orders == first.orders
    assert second.revenue == pytest.approx(first.revenue, abs=1e-6)
    assert second.tier == first.tier
    assert second.order_history == first.order_history
    assert served(second)["spend_12m"] == served(first)["spend_12m"]
    if not any(isinstance(e, ev.OrderRefunded) for e in events):
        assert second.loyalty_points == first.loyalty_points
        # Points expire a year after their order (the default programme).
        last = max(e.ts for e in events)
        assert first.loyalty_points == sum(
            int(e.total)
            for e in events
            if isinstance(e, ev.OrderPlaced) and e.ts + 365 * 86400 > last
        )


# Property tests: merging two profiles ---------------------------------------------

CATEGORIES = ("shoes", "hats", "bags")
CHANNELS: tuple[ev.MessageChannel, ...] = ("email", "sms", "push")
MESSAGE_KINDS = (ev.MessageSent, ev.MessageOpened, ev.MessageClicked, ev.MessageBounced)


@st.composite
def profile_events(draw: st.DrawFn, customer: str | None, anon: str | None) -> list[ev.BaseEvent]:
    """A random mix of the events that feed sessions, affinity, orders and engagement."""
    prefix = customer or f"anon-{anon}"
    n = draw(st.integers(0, 15))
    events: list[ev.BaseEvent] = []
    if draw(st.booleans()):
        tz = draw(st.sampled_from(["Asia/Tokyo", "America/New_York", "Not/AZone"]))
        events.append(
            ev.Identify(
                event_id=f"{prefix}-id",
                timestamp=at(T0),
                traits=ev.Traits(timezone=tz),
                customer_id=customer,
                anonymous_id=anon,
            )
        )
    for i in range(n):
        eid = f"{prefix}-{i}"
        ts = at(T0 + draw(st.integers(0, 60 * 86400)))
        kind = draw(st.sampled_from(["page", "view", "cart", "order", "message"]))
        category = draw(st.sampled_from(CATEGORIES))
        if kind == "page":
            events.append(
                ev.PageView(event_id=eid, timestamp=ts, customer_id=customer, anonymous_id=anon)
            )
        elif kind == "view":
            events.append(
                ev.ProductView(
                    event_id=eid,
                    timestamp=ts,
                    sku="s",
                    category=category,
                    customer_id=customer,
                    anonymous_id=anon,
                )
            )
        elif kind == "cart":
            events.append(
                ev.AddToCart(
                    event_id=eid,
                    timestamp=ts,
                    sku="s",
                    price=1.0,
                    category=category,
                    customer_id=customer,
                    anonymous_id=anon,
                )
            )
        elif kind == "order":
            events.append(
                ev.OrderPlaced(
                    event_id=eid,
                    timestamp=ts,
                    order_id=f"o-{eid}",
                    total=draw(money),
                    items=(ev.LineItem(sku="s", price=1.0, category=category),),
                    customer_id=customer,
                    anonymous_id=anon,
                )
            )
        else:
            events.append(
                draw(st.sampled_from(MESSAGE_KINDS))(
                    event_id=eid,
                    timestamp=ts,
                    message_id=f"m-{eid}",
                    message_channel=draw(st.sampled_from(CHANNELS)),
                    customer_id=customer,
                    anonymous_id=anon,
                )
            )
    return events


@given(profile_events("c1", None), profile_events(None, "x"))
@settings(max_examples=60, deadline=None)
def test_merge_does_not_depend_on_which_profile_is_merged_into_which(
    known_events: list[ev.BaseEvent], anon_events: list[ev.BaseEvent]
) -> None:
    """engine/merge.py: apart from traits, merging a into b equals merging b into a."""
    a, _ = run(known_events) if known_events else (CustomerState(customer_id="c1"), [])
    b, _ = run(anon_events) if anon_events else (CustomerState(customer_id="anon:x"), [])
    ab = merge_states(copy.deepcopy(a), copy.deepcopy(b))
    ba = merge_states(copy.deepcopy(b), copy.deepcopy(a))

    assert ab.sessions == ba.sessions == a.sessions + b.sessions
    assert ab.session_started_at == ba.session_started_at
    assert ab.order_history == ba.order_history
    assert {o.order_id for o in ab.order_history} == {
        o.order_id for o in (*a.order_history, *b.order_history)
    }
    assert ab.loyalty_points == ba.loyalty_points == a.loyalty_points + b.loyalty_points
    assert ab.engagement == ba.engagement
    assert ab.active_hours == ba.active_hours
    assert sum(ab.active_hours) == a.events_total + b.events_total
    assert ab.affinity.keys() == ba.affinity.keys() == a.affinity.keys() | b.affinity.keys()
    horizon = max(a.last_seen, b.last_seen)
    for category, score in ab.affinity.items():
        other = ba.affinity[category]
        assert score.at == other.at
        assert score.value == pytest.approx(other.value)
        # Affinities add as decayed scores.
        parts = [s.affinity[category].at_time(horizon) for s in (a, b) if category in s.affinity]
        assert score.at_time(horizon) == pytest.approx(sum(parts))
