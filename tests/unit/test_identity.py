"""Dedup by event id, merging anonymous profiles, and identity resolution.

These are the rules that keep counts exact when the same event arrives twice
and when a visitor logs in half-way through a session.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from engine import events as ev
from engine.customer import (
    DuplicateDropped,
    Engine,
    ProfileRemoved,
    SegmentsChanged,
    TriggerFired,
)
from engine.identity import AnonymousState, Link, ToCustomer, link_of, resolve
from engine.merge import merge_states
from engine.profile import CustomerState
from tests.unit.test_customer import CART_RULES

T0 = 1_700_000_000.0
ENGINE = Engine(CART_RULES, dedup_window_s=3600.0)


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def view(
    eid: str, ts: float, sku: str, customer: str | None = None, anon: str | None = None
) -> ev.ProductView:
    return ev.ProductView(
        event_id=eid,
        customer_id=customer,
        anonymous_id=anon,
        timestamp=at(ts),
        sku=sku,
        category="mugs",
    )


def cart(
    eid: str,
    ts: float,
    sku: str,
    customer: str | None = None,
    anon: str | None = None,
    qty: int = 1,
    price: float = 5.0,
) -> ev.AddToCart:
    return ev.AddToCart(
        event_id=eid,
        customer_id=customer,
        anonymous_id=anon,
        timestamp=at(ts),
        sku=sku,
        quantity=qty,
        price=price,
    )


def identify(eid: str, ts: float, customer: str, anon: str) -> ev.Identify:
    return ev.Identify(
        event_id=eid,
        customer_id=customer,
        anonymous_id=anon,
        timestamp=at(ts),
        traits=ev.Traits(email=f"{customer}@example.com"),
    )


# Dedup -----------------------------------------------------------------------


def test_a_repeated_event_id_is_dropped_and_counted() -> None:
    state, _ = ENGINE.apply(None, cart("e1", T0, "s", customer="c"))
    state, effects = ENGINE.apply(state, cart("e1", T0, "s", customer="c"))
    assert state.cart_quantity == 1 and state.events_total == 1
    assert state.duplicates == 1
    assert DuplicateDropped("c", "e1") in effects


def test_dedup_memory_is_bounded_and_keeps_recent_ids() -> None:
    state: CustomerState | None = None
    for i in range(5000):
        state, _ = ENGINE.apply(state, view(f"e{i}", T0 + i, "s", customer="c"))
    assert state is not None
    assert len(state.seen_ids) <= 2000
    # The most recent ids are still remembered.
    state, effects = ENGINE.apply(state, view("e4999", T0 + 4999, "s", customer="c"))
    assert any(isinstance(e, DuplicateDropped) for e in effects)


@given(st.lists(st.integers(0, 30), min_size=1, max_size=60))
def test_replaying_any_events_twice_counts_them_once(ids: list[int]) -> None:
    state: CustomerState | None = None
    for i in ids + ids:
        state, _ = ENGINE.apply(state, view(f"e{i}", T0 + i, f"s{i % 4}", customer="c"))
    assert state is not None
    assert state.events_total == len(set(ids))
    assert state.duplicates == len(ids) * 2 - len(set(ids))


# Merge -----------------------------------------------------------------------


def _profile(customer: str, events: list[ev.BaseEvent]) -> CustomerState:
    state: CustomerState | None = CustomerState(customer_id=customer)
    for e in events:
        state, _ = ENGINE.apply(state, e)
    assert state is not None
    return state


def test_merge_adds_counts_unites_carts_and_interleaves_views() -> None:
    known = _profile(
        "c", [view("k1", T0 + 10, "a", customer="c"), cart("k2", T0 + 20, "a", customer="c", qty=2)]
    )
    anon = _profile(
        "anon:x",
        [
            view("a1", T0 + 5, "b", anon="x"),
            view("a2", T0 + 30, "c", anon="x"),
            cart("a3", T0 + 31, "a", anon="x", qty=1, price=4.0),
        ],
    )
    merged = merge_states(known, anon)
    assert merged.customer_id == "c"
    assert merged.events_total == 5
    assert merged.event_counts == {"product_view": 3, "add_to_cart": 2}
    assert merged.first_seen == T0 + 5 and merged.last_seen == T0 + 31
    assert merged.cart["a"].quantity == 3
    assert merged.cart["a"].price == 4.0  # the later cart's price
    assert [v.sku for v in merged.recently_viewed] == ["c", "a", "b"]
    assert merged.category_views == {"mugs": 3}
    assert set(merged.seen_ids) == {"k1", "k2", "a1", "a2", "a3"}


def _events_strategy(
    customer: str | None, anon: str | None, prefix: str
) -> st.SearchStrategy[list[ev.BaseEvent]]:
    one = st.builds(
        lambda i, kind, sku, qty: (view if kind == "view" else cart)(
            f"{prefix}{i}",
            T0 + i,
            sku,
            customer=customer,
            anon=anon,
            **({"qty": qty} if kind == "cart" else {}),
        ),
        st.integers(0, 500),
        st.sampled_from(["view", "cart"]),
        st.sampled_from("abc"),
        st.integers(1, 3),
    )
    return st.lists(one, max_size=12, unique_by=lambda e: e.event_id)


@given(_events_strategy("c", None, "k"), _events_strategy(None, "x", "a"))
def test_merge_is_order_independent_apart_from_who_keeps_the_id(
    known_events: list[ev.BaseEvent], anon_events: list[ev.BaseEvent]
) -> None:
    a = _profile("c", known_events)
    b = _profile("anon:x", anon_events)
    ab = merge_states(copy.deepcopy(a), copy.deepcopy(b))
    ba = merge_states(copy.deepcopy(b), copy.deepcopy(a))
    ba.customer_id = ab.customer_id
    assert ab.events_total == ba.events_total == a.events_total + b.events_total
    assert ab.event_counts == ba.event_counts
    assert {s: x.quantity for s, x in ab.cart.items()} == {
        s: x.quantity for s, x in ba.cart.items()
    }
    assert ab.recently_viewed == ba.recently_viewed
    assert (ab.first_seen, ab.last_seen) == (ba.first_seen, ba.last_seen)
    assert ab.seen_ids == ba.seen_ids


# Identity resolution ---------------------------------------------------------


def _link(
    engine_anon: AnonymousState | None, customer: str, anon: str, ts: float
) -> tuple[AnonymousState, list[object]]:
    link = link_of(identify("i1", ts, customer, anon))
    assert link is not None
    state, out = resolve(ENGINE, engine_anon, link)
    return state, list(out)


def test_only_events_with_both_ids_make_a_link() -> None:
    assert link_of(identify("i1", T0, "c", "x")) == Link("x", "c", T0)
    assert link_of(view("v1", T0, "s", customer="c")) is None
    assert link_of(view("v2", T0, "s", anon="x")) is None


def test_anonymous_events_build_their_own_profile_until_linked() -> None:
    anon, out = resolve(ENGINE, None, view("a1", T0, "s", anon="x"))
    assert anon.profile is not None and anon.profile.customer_id == "anon:x"
    assert not any(isinstance(o, ToCustomer) for o in out)


def test_the_link_carries_the_anonymous_profile_to_the_customer() -> None:
    anon, _ = resolve(ENGINE, None, cart("a1", T0, "s", anon="x"))
    anon, out = _link(anon, "c", "x", T0 + 1)
    [forward] = [o for o in out if isinstance(o, ToCustomer)]
    assert forward.customer_id == "c" and forward.event is None
    assert isinstance(forward.merge, CustomerState) and forward.merge.cart_quantity == 1
    assert ProfileRemoved("anon:x") in out
    assert anon.customer_id == "c" and anon.profile is None


def test_a_link_without_anonymous_history_only_records_the_alias() -> None:
    anon, out = _link(None, "c", "x", T0)
    assert out == [] and anon.customer_id == "c"


def test_after_the_link_anonymous_events_go_to_the_customer() -> None:
    anon, _ = _link(None, "c", "x", T0)
    anon, out = resolve(ENGINE, anon, view("a2", T0 + 1, "s", anon="x"))
    [forward] = out
    assert isinstance(forward, ToCustomer)
    assert forward.customer_id == "c"
    assert forward.event is not None and forward.event.customer_id == "c"
    assert forward.merge is None


def test_the_first_link_wins_on_a_shared_device() -> None:
    anon, _ = _link(None, "c1", "x", T0)
    anon, out = _link(anon, "c2", "x", T0 + 1)
    assert out == [] and anon.customer_id == "c1"


def test_an_anonymous_cart_fires_for_the_customer_after_merge() -> None:
    """The timer travels with the merged profile, now with an e-mail to send to."""
    anon, _ = resolve(ENGINE, None, cart("a1", T0, "s", anon="x"))
    state, _ = ENGINE.apply(None, identify("i1", T0 + 1, "c", "x"))
    anon, out = _link(anon, "c", "x", T0 + 1)
    [forward] = [o for o in out if isinstance(o, ToCustomer)]
    assert isinstance(forward.merge, CustomerState)
    state, effects = ENGINE.absorb(state, forward.merge, "c")
    assert state.cart_quantity == 1 and "active_cart" in state.segments
    assert any(isinstance(e, SegmentsChanged) and "active_cart" in e.added for e in effects)
    [fired] = [e for e in ENGINE.fire_due(state, T0 + 1801) if isinstance(e, TriggerFired)]
    assert fired.trigger.customer_id == "c"
    assert fired.trigger.payload["email"] == "c@example.com"


def test_resolving_keeps_anonymous_state_fresh_per_id() -> None:
    anon = AnonymousState(anonymous_id="x")
    anon, _ = resolve(ENGINE, anon, view("a1", T0, "s", anon="x"))
    anon, _ = resolve(ENGINE, anon, view("a1", T0, "s", anon="x"))
    assert anon.profile is not None and anon.profile.duplicates == 1
