"""The per-customer state machine: profiles and an abandoned-cart rule's wait.

The dataflow trusts ``Engine.apply`` to be a pure function of (state, event):
the same inputs must give the same state, the same trigger ids (the
dispatcher's idempotency keys) and the same serving view, whatever order the
events arrive in and however often ``fire_due`` is polled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine import events as ev
from engine.customer import Effect, Engine, ProfileChanged
from engine.profile import RECENT_ITEMS, CustomerState, encode_view, parse_view, profile_view
from engine.rules.memory import WAIT, Pending
from engine.triggers import Trigger, TriggerFired, trigger_id
from tests.rules_helpers import compile_rules

T0 = 1_700_000_000.0
DELAY = 1800.0
RULE = "abandoned_cart"
# The shipped rule's logic, as a transactional webhook so no guard interferes.
CART_RULES = compile_rules(
    {
        "abandoned_cart.yaml": """
id: abandoned_cart
category: transactional
trigger: {event: add_to_cart}
wait:
  for: 30m
  cancel_on: [{event: order_placed}]
conditions: ["cart.quantity > 0"]
action:
  channel: webhook
  template: cart
  payload:
    cart: cart.items
    cart_value: cart.value
    email: 'has(profile.traits.email) ? profile.traits.email : ""'
"""
    }
)


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def add(
    eid: str, ts: float, sku: str = "sku-1", qty: int = 1, price: float = 10.0, customer: str = "c1"
) -> ev.AddToCart:
    return ev.AddToCart(
        event_id=eid,
        customer_id=customer,
        timestamp=at(ts),
        sku=sku,
        quantity=qty,
        price=price,
        name=f"name-{sku}",
    )


def remove(eid: str, ts: float, sku: str = "sku-1", qty: int | None = None) -> ev.RemoveFromCart:
    return ev.RemoveFromCart(
        event_id=eid, customer_id="c1", timestamp=at(ts), sku=sku, quantity=qty
    )


def order(eid: str, ts: float, total: float = 10.0) -> ev.OrderPlaced:
    return ev.OrderPlaced(
        event_id=eid, customer_id="c1", timestamp=at(ts), order_id=f"o-{eid}", total=total
    )


def page(eid: str, ts: float) -> ev.PageView:
    return ev.PageView(event_id=eid, customer_id="c1", timestamp=at(ts))


def fired(effects: list[Effect]) -> list[Trigger]:
    return [e.trigger for e in effects if isinstance(e, TriggerFired)]


def run(engine: Engine, events: list[ev.BaseEvent]) -> tuple[CustomerState, list[Trigger]]:
    """Apply events in the given order."""
    state: CustomerState | None = None
    triggers: list[Trigger] = []
    for event in events:
        state, effects = engine.apply(state, event)
        triggers += fired(effects)
    assert state is not None
    return state, triggers


def waiting(state: CustomerState) -> list[tuple[float, str]]:
    return [(p.due, p.origin_id) for p in state.pending if p.kind == WAIT]


@pytest.fixture
def engine() -> Engine:
    return Engine(CART_RULES)


# The abandoned-cart timer ----------------------------------------------------


def test_add_to_cart_arms_a_timer_at_event_time_plus_delay(engine: Engine) -> None:
    state, effects = engine.apply(None, add("e1", T0))
    assert waiting(state) == [(T0 + DELAY, "e1")]
    assert state.pending[0] == Pending(RULE, WAIT, T0 + DELAY, "e1", 1, add("e1", T0))
    assert Engine.next_due(state) == T0 + DELAY
    assert fired(effects) == []
    assert effects[-1] == ProfileChanged(state)


def test_timer_fires_once_at_its_due_time(engine: Engine) -> None:
    state, _ = run(engine, [add("e1", T0, qty=2, price=4.5)])
    assert engine.fire_due(state, T0 + DELAY - 0.001) == []

    triggers = fired(engine.fire_due(state, T0 + DELAY))
    assert len(triggers) == 1
    trigger = triggers[0]
    assert trigger.trigger_id == trigger_id(RULE, "c1", "e1", 1)
    assert (trigger.rule_id, trigger.customer_id, trigger.origin_event_id) == (RULE, "c1", "e1")
    assert trigger.fired_at == T0 + DELAY
    assert trigger.payload["cart"] == [
        {"sku": "sku-1", "quantity": 2, "price": 4.5, "name": "name-sku-1", "category": None}
    ]
    assert trigger.payload["cart_value"] == 9.0

    assert fired(engine.fire_due(state, T0 + 10 * DELAY)) == []
    assert Engine.next_due(state) is None


def test_fire_due_long_after_the_due_time_still_fires_once(engine: Engine) -> None:
    state, _ = run(engine, [add("e1", T0)])
    assert len(fired(engine.fire_due(state, T0 + 100 * DELAY))) == 1
    assert fired(engine.fire_due(state, T0 + 200 * DELAY)) == []


def test_trigger_id_is_deterministic_and_follows_the_last_add(engine: Engine) -> None:
    """A replay after a crash must produce the same id, or the customer is mailed twice."""
    events: list[ev.BaseEvent] = [add("e1", T0), add("e2", T0 + 60, sku="sku-2")]
    first_state, _ = run(engine, events)
    second_state, _ = run(Engine(CART_RULES), events)

    first = fired(engine.fire_due(first_state, T0 + 60 + DELAY))
    second = fired(engine.fire_due(second_state, T0 + 60 + DELAY))
    assert first == second
    assert [t.trigger_id for t in first] == [trigger_id(RULE, "c1", "e2", 1)]
    assert first[0].origin_event_id == "e2"
    assert first[0].fired_at == T0 + 60 + DELAY


def test_a_later_add_to_cart_postpones_the_timer(engine: Engine) -> None:
    state, _ = run(engine, [add("e1", T0), add("e2", T0 + 600)])
    assert engine.fire_due(state, T0 + DELAY) == []
    assert len(fired(engine.fire_due(state, T0 + 600 + DELAY))) == 1


def test_trigger_ids_differ_by_rule_customer_origin_and_entry() -> None:
    ids = {
        trigger_id(RULE, "c1", "e1", 1),
        trigger_id("other", "c1", "e1", 1),
        trigger_id(RULE, "c2", "e1", 1),
        trigger_id(RULE, "c1", "e2", 1),
        trigger_id(RULE, "c1", "e1", 2),
    }
    assert len(ids) == 5
    # The separator keeps ("a", "bc") and ("ab", "c") apart.
    assert trigger_id("a", "bc", "d") != trigger_id("ab", "c", "d")


def test_order_cancels_the_timer_and_empties_the_cart(engine: Engine) -> None:
    state, _ = run(engine, [add("e1", T0), order("e2", T0 + 60, total=10.0)])
    assert state.pending == []
    assert state.cart == {}
    assert state.cart_quantity == 0
    assert fired(engine.fire_due(state, T0 + 10 * DELAY)) == []


def test_an_add_to_cart_arriving_after_the_order_that_followed_it_stays_bought(
    engine: Engine,
) -> None:
    """Events reach a customer out of time order (from another partition, or
    through an anonymous id's step): an add before the latest order was bought
    by it, whichever came first, as a profile merge decides for a whole cart."""
    in_order, _ = run(engine, [add("e1", T0), order("e2", T0 + 60)])
    late, _ = run(engine, [order("e2", T0 + 60), add("e1", T0)])
    assert late.cart == in_order.cart == {}
    assert late.event_counts == in_order.event_counts
    after, _ = run(engine, [order("e2", T0 + 60), add("e3", T0 + 120)])
    assert list(after.cart) != []  # a later add is a new cart


def test_cart_emptied_by_removal_does_not_fire(engine: Engine) -> None:
    state, _ = run(engine, [add("e1", T0, qty=2), remove("e2", T0 + 60, qty=2)])
    assert state.cart == {}
    assert fired(engine.fire_due(state, T0 + 10 * DELAY)) == []
    assert Engine.next_due(state) is None, "a spent timer must not be polled forever"


def test_partial_removal_keeps_the_cart_and_the_timer(engine: Engine) -> None:
    state, _ = run(engine, [add("e1", T0, qty=3), remove("e2", T0 + 60, qty=1)])
    assert state.cart_quantity == 2
    [trigger] = fired(engine.fire_due(state, T0 + DELAY))
    assert trigger.payload["cart"][0]["quantity"] == 2
    assert trigger.origin_event_id == "e1", "removal neither arms nor re-arms"


def test_due_timer_fires_when_a_later_event_arrives(engine: Engine) -> None:
    """Event-time order: without fire_due polling, the next event still fires it first."""
    later = T0 + DELAY + 30
    state, _ = run(engine, [add("e1", T0)])
    state, effects = engine.apply(state, add("e2", later, sku="sku-2"))

    [trigger] = fired(effects)
    first_profile = next(i for i, e in enumerate(effects) if isinstance(e, ProfileChanged))
    assert effects.index(TriggerFired(trigger)) < first_profile, "trigger before the update"
    assert trigger.trigger_id == trigger_id(RULE, "c1", "e1", 1)
    assert trigger.fired_at == T0 + DELAY
    # It fired on the state it was due on: the later item is not in it.
    assert [line["sku"] for line in trigger.payload["cart"]] == ["sku-1"]
    # And the later add entered the rule afresh.
    assert waiting(state) == [(later + DELAY, "e2")]
    assert state.pending[0].entry == 2


def test_an_order_after_the_due_time_comes_too_late_to_cancel(engine: Engine) -> None:
    state, _ = run(engine, [add("e1", T0)])
    state, effects = engine.apply(state, order("e2", T0 + DELAY + 1))
    assert [t.origin_event_id for t in fired(effects)] == ["e1"]
    assert state.cart == {}


def test_engine_without_rules_never_arms_timers() -> None:
    state, triggers = run(Engine(), [add("e1", T0)])
    assert state.pending == []
    assert triggers == []
    assert fired(Engine().fire_due(state, T0 + 10 * DELAY)) == []


def test_late_older_add_to_cart_does_not_bring_the_timer_forward(engine: Engine) -> None:
    state, _ = run(engine, [add("e2", T0 + 600), add("e1", T0)])
    assert fired(engine.fire_due(state, T0 + DELAY)) == []


# Profile fields --------------------------------------------------------------


def test_counts_and_seen_times_follow_event_time_out_of_order(engine: Engine) -> None:
    events: list[ev.BaseEvent] = [
        page("e1", T0 + 50),
        add("e2", T0 + 100),
        page("e3", T0),
        page("e4", T0 + 20),
    ]
    state, _ = run(engine, events)
    assert state.first_seen == T0
    assert state.last_seen == T0 + 100
    assert state.events_total == 4
    assert state.event_counts == {"page_view": 3, "add_to_cart": 1}


def test_first_event_sets_both_seen_times(engine: Engine) -> None:
    state, _ = engine.apply(None, page("e1", T0))
    assert (state.first_seen, state.last_seen) == (T0, T0)
    assert state.customer_id == "c1"


def test_anonymous_events_are_keyed_by_anonymous_id(engine: Engine) -> None:
    event = ev.PageView(event_id="e1", anonymous_id="a7", timestamp=at(T0))
    state, _ = engine.apply(None, event)
    assert state.customer_id == "anon:a7"


def test_consent_keeps_the_latest_decision_per_channel(engine: Engine) -> None:
    def consent(eid: str, channel: Any, granted: bool) -> ev.ConsentChanged:
        return ev.ConsentChanged(
            event_id=eid,
            customer_id="c1",
            timestamp=at(T0),
            consent_channel=channel,
            granted=granted,
        )

    state, _ = run(
        engine,
        [consent("e1", "email", True), consent("e2", "sms", True), consent("e3", "email", False)],
    )
    assert {ch: c.granted for ch, c in state.consent.items()} == {"email": False, "sms": True}


def test_support_tickets_open_and_close(engine: Engine) -> None:
    def opened(eid: str, ticket: str) -> ev.SupportTicketOpened:
        return ev.SupportTicketOpened(
            event_id=eid, customer_id="c1", timestamp=at(T0), ticket_id=ticket
        )

    def closed(eid: str, ticket: str) -> ev.SupportTicketClosed:
        return ev.SupportTicketClosed(
            event_id=eid, customer_id="c1", timestamp=at(T0), ticket_id=ticket
        )

    state, _ = run(
        engine,
        [
            opened("e1", "t1"),
            opened("e2", "t2"),
            opened("e3", "t1"),
            closed("e4", "t1"),
            closed("e5", "never-opened"),
        ],
    )
    assert state.open_tickets == ["t2"]


def test_identify_merges_traits_without_erasing_known_ones(engine: Engine) -> None:
    def identify(eid: str, **traits: str) -> ev.Identify:
        return ev.Identify(
            event_id=eid, customer_id="c1", timestamp=at(T0), traits=ev.Traits(**traits)
        )

    state, _ = run(
        engine,
        [
            identify("e1", email="a@example.com", first_name="Ada"),
            identify("e2", first_name="Ava", postcode="1011"),
        ],
    )
    assert state.traits == {"email": "a@example.com", "first_name": "Ava", "postcode": "1011"}
    state, _ = engine.apply(state, add("e3", T0 + 1))
    [trigger] = fired(engine.fire_due(state, T0 + 1 + DELAY))
    assert trigger.payload["email"] == "a@example.com"


def test_recently_viewed_is_most_recent_first_deduplicated_and_capped(engine: Engine) -> None:
    def view(i: int, sku: str) -> ev.ProductView:
        return ev.ProductView(
            event_id=f"v{i}",
            customer_id="c1",
            timestamp=at(T0 + i),
            sku=sku,
            category="shoes" if i % 2 else None,
        )

    skus = [f"s{i}" for i in range(RECENT_ITEMS + 5)] + ["s3"]
    state, _ = run(engine, [view(i, sku) for i, sku in enumerate(skus)])
    viewed = [v.sku for v in state.recently_viewed]
    assert viewed[0] == "s3"
    assert len(viewed) == RECENT_ITEMS
    assert len(set(viewed)) == RECENT_ITEMS
    assert viewed[1] == f"s{RECENT_ITEMS + 4}"
    assert state.category_views == {"shoes": len(skus) // 2}


def test_adding_a_sku_again_sums_quantity_and_takes_the_new_price(engine: Engine) -> None:
    state, _ = run(engine, [add("e1", T0, qty=1, price=5.0), add("e2", T0 + 1, qty=2, price=4.0)])
    assert state.cart_quantity == 3
    assert state.cart_value == 12.0
    assert state.cart_updated_at == T0 + 1


def test_removing_an_unknown_sku_is_harmless(engine: Engine) -> None:
    state, _ = run(engine, [add("e1", T0), remove("e2", T0 + 1, sku="other", qty=5)])
    assert state.cart_quantity == 1


# The serving view ------------------------------------------------------------

VIEW_FIELDS = {
    "customer_id",
    "first_seen",
    "last_seen",
    "events_total",
    "event_counts",
    "recently_viewed",
    "category_views",
    "cart",
    "cart_value",
    "cart_quantity",
    "cart_updated_at",
    "orders",
    "revenue",
    "average_order_value",
    "last_order_at",
    "consent",
    "open_tickets",
    "traits",
    "duplicate_events",
    "sessions",
    "category_affinity",
    "refunds",
    "orders_12m",
    "spend_12m",
    "loyalty_points",
    "tier",
    "previous_tier",
    "tier_changed_at",
    "preferred_channel",
    "preferred_hour",
    "segments",
    "anonymous_ids",
    "account",
}


def test_profile_view_always_writes_every_field(engine: Engine) -> None:
    """A field left out would keep a stale value in Redis (e.g. an emptied cart)."""
    empty = CustomerState(customer_id="c1")
    state, _ = run(engine, [add("e1", T0)])
    full_view = encode_view(profile_view(state))
    state, _ = engine.apply(state, order("e2", T0 + 1, total=30.0))
    emptied_view = encode_view(profile_view(state))

    for raw in (encode_view(profile_view(empty)), full_view, emptied_view):
        # What Redis holds is one document; decoding restores every field.
        assert set(parse_view(raw)) == VIEW_FIELDS
    emptied = parse_view(emptied_view)
    assert emptied["cart"] == []
    assert emptied["cart_quantity"] == 0
    assert emptied["cart_value"] == 0.0


def test_profile_view_holds_absolute_values(engine: Engine) -> None:
    """Writing the view twice (a replay) must equal writing it once."""
    state, _ = run(
        engine,
        [
            add("e1", T0, qty=2, price=3.0),
            order("e2", T0 + 5, total=6.0),
            order("e3", T0 + 9, total=4.0),
        ],
    )
    assert profile_view(state) == profile_view(state)
    parsed = parse_view(profile_view(state))
    assert parsed["orders"] == 2
    assert parsed["revenue"] == 10.0
    assert parsed["average_order_value"] == 5.0
    assert parsed["last_order_at"] == T0 + 9


def test_parse_view_restores_typed_values(engine: Engine) -> None:
    consent = ev.ConsentChanged(
        event_id="e3", customer_id="c1", timestamp=at(T0 + 2), consent_channel="email", granted=True
    )
    state, _ = run(
        engine, [add("e1", T0 + 0.25, qty=2, price=1.1, sku="a"), page("e2", T0 + 1), consent]
    )
    parsed = parse_view(profile_view(state))

    assert parsed["customer_id"] == "c1"
    assert parsed["first_seen"] == T0 + 0.25
    assert parsed["last_seen"] == T0 + 2
    assert parsed["events_total"] == 3
    assert parsed["event_counts"] == {"add_to_cart": 1, "page_view": 1, "consent_changed": 1}
    assert parsed["cart"] == [
        {"sku": "a", "quantity": 2, "price": 1.1, "category": None, "name": "name-a"}
    ]
    assert parsed["cart_quantity"] == 2
    assert parsed["cart_value"] == 2.2
    assert parsed["cart_updated_at"] == T0 + 0.25
    assert parsed["orders"] == 0
    assert parsed["average_order_value"] == 0.0
    assert parsed["consent"] == {"email": True}
    assert parsed["open_tickets"] == []
    assert parsed["traits"] == {}
    int_fields = {
        "events_total",
        "cart_quantity",
        "orders",
        "sessions",
        "refunds",
        "orders_12m",
        "loyalty_points",
        "preferred_hour",
        "duplicate_events",
    }
    str_fields = {"customer_id", "tier", "previous_tier", "preferred_channel"}
    for name in VIEW_FIELDS - int_fields - str_fields:
        assert not isinstance(parsed[name], str), name
    for name in str_fields:
        assert isinstance(parsed[name], str), name
    for name in int_fields:
        assert type(parsed[name]) is int, name


# Random sequences against a reference model ---------------------------------

SKUS = ("a", "b", "c")


class CartMachine(RuleBasedStateMachine):
    """One customer's cart events, time moving forward, compared to a tiny model.

    The model is the specification in miniature: a per-SKU cart cleared by orders,
    and at most one pending timer that fires iff the cart is non-empty when due.
    """

    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine(CART_RULES)
        self.state: CustomerState | None = None
        self.now = T0
        self.seq = 0
        self.triggers: list[Trigger] = []
        # The model.
        self.cart: dict[str, int] = {}
        self.orders = 0
        self.revenue = 0.0
        self.timer: tuple[float, str] | None = None
        self.entries = 0
        self.expected: list[tuple[str, int]] = []  # origin, entry

    def _model_fire(self, now: float) -> None:
        if self.timer is not None and self.timer[0] <= now:
            if any(self.cart.values()):
                self.expected.append((self.timer[1], self.entries))
            self.timer = None

    def _apply(self, event: ev.BaseEvent) -> None:
        self._model_fire(event.ts)
        self.state, effects = self.engine.apply(self.state, event)
        self.triggers += fired(effects)

    def _next_id(self) -> str:
        self.seq += 1
        return f"e{self.seq}"

    @rule(dt=st.sampled_from([0.0, 1.0, DELAY / 2, DELAY - 1, DELAY, DELAY + 1, 3 * DELAY]))
    def wait(self, dt: float) -> None:
        self.now += dt

    @rule(
        sku=st.sampled_from(SKUS), qty=st.integers(1, 5), price=st.floats(0, 1000, allow_nan=False)
    )
    def add_to_cart(self, sku: str, qty: int, price: float) -> None:
        eid = self._next_id()
        self._apply(add(eid, self.now, sku=sku, qty=qty, price=price))
        self.cart[sku] = self.cart.get(sku, 0) + qty
        if self.timer is None:
            self.entries += 1  # a new entry; while waiting, the wait restarts
        self.timer = (self.now + DELAY, eid)

    @rule(sku=st.sampled_from(SKUS), qty=st.none() | st.integers(1, 5))
    def remove_from_cart(self, sku: str, qty: int | None) -> None:
        self._apply(remove(self._next_id(), self.now, sku=sku, qty=qty))
        have = self.cart.get(sku, 0)
        self.cart[sku] = 0 if qty is None else max(0, have - qty)

    @rule()
    def empty_cart(self) -> None:
        """Remove every line, so the cart condition gets exercised as often as firing does."""
        for sku in [s for s, q in self.cart.items() if q]:
            self.remove_from_cart(sku, None)

    @rule(total=st.floats(0, 10_000, allow_nan=False))
    def place_order(self, total: float) -> None:
        self._apply(order(self._next_id(), self.now, total=total))
        self.orders += 1
        self.revenue += total
        self.cart.clear()
        self.timer = None

    @rule()
    def fire_due(self) -> None:
        if self.state is None:
            return
        self._model_fire(self.now)
        self.triggers += fired(self.engine.fire_due(self.state, self.now))

    @invariant()
    def matches_the_model(self) -> None:
        if self.state is None:
            return
        assert self.state.orders == self.orders
        assert self.state.revenue == pytest.approx(self.revenue)
        assert self.state.cart_quantity == sum(self.cart.values())
        assert {s: line.quantity for s, line in self.state.cart.items()} == {
            s: q for s, q in self.cart.items() if q
        }
        assert all(line.quantity > 0 for line in self.state.cart.values())
        assert [(t.origin_event_id, t.entry) for t in self.triggers] == self.expected

    @invariant()
    def trigger_ids_are_unique(self) -> None:
        ids = [t.trigger_id for t in self.triggers]
        assert len(ids) == len(set(ids))
        assert ids == [trigger_id(RULE, "c1", o, n) for o, n in self.expected]

    @invariant()
    def at_most_one_pending_timer(self) -> None:
        if self.state is not None:
            assert {p.rule_id for p in self.state.pending} <= {RULE}
            expected_due = None if self.timer is None else self.timer[0]
            assert Engine.next_due(self.state) == expected_due


CartMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestCartMachine = CartMachine.TestCase


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(SKUS), st.integers(1, 5)),
        st.tuples(st.just("remove"), st.sampled_from(SKUS), st.integers(1, 5)),
        st.tuples(st.just("order"), st.just(""), st.integers(0, 500)),
    ),
    max_size=40,
)


@given(ops, st.randoms(use_true_random=False))
@settings(max_examples=60)
def test_profile_totals_do_not_depend_on_arrival_order(
    sequence: list[tuple[str, str, int]], rnd: Any
) -> None:
    """Counts, seen times and revenue are order-insensitive; shuffled arrival must agree."""
    events: list[ev.BaseEvent] = []
    for i, (kind, sku, n) in enumerate(sequence):
        ts = T0 + i
        if kind == "add":
            events.append(add(f"e{i}", ts, sku=sku, qty=n))
        elif kind == "remove":
            events.append(remove(f"e{i}", ts, sku=sku, qty=n))
        else:
            events.append(order(f"e{i}", ts, total=float(n)))
    if not events:
        return
    shuffled = list(events)
    rnd.shuffle(shuffled)
    in_order, _ = run(Engine(), events)
    arrived, _ = run(Engine(), shuffled)
    for name in ("first_seen", "last_seen", "events_total", "event_counts", "orders"):
        assert getattr(arrived, name) == getattr(in_order, name), name
    assert arrived.revenue == pytest.approx(in_order.revenue)
