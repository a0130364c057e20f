"""The customer's side, through the real engine and the shipped actions.yaml:
what each event tells the policy, and features that stay in [0, 1]."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import events as ev
from engine.customer import Engine
from engine.loyalty import DEFAULT_PROGRAM
from engine.nba.book import ActionBook, load_actions
from engine.nba.customer import EXPLICIT_REWARD, inputs
from engine.nba.features import FEATURE_NAMES
from engine.nba.records import Context, Input, Signal
from engine.profile import CustomerState
from engine.rules.context import Scope

SHIPPED = Path(__file__).resolve().parents[2] / "rules" / "actions.yaml"
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def shipped() -> ActionBook:
    book = load_actions("actions.yaml", SHIPPED.read_text(encoding="utf-8")).book
    assert book is not None
    return book


BOOK = shipped()


class Shopper:
    """One customer's events through the engine, and what each tells the policy."""

    def __init__(self, customer: str = "c1", book: ActionBook = BOOK) -> None:
        self.customer = customer
        self.book = book
        self.engine = Engine()
        self.state: CustomerState | None = None
        self.n = 0

    def do(self, kind: type[ev.BaseEvent], **fields: Any) -> list[Input]:
        self.n += 1
        event = kind(
            event_id=f"e{self.n}",
            customer_id=self.customer,
            timestamp=T0 + timedelta(minutes=self.n),
            **fields,
        )
        self.state, _effects = self.engine.apply(self.state, event)
        return inputs(self.book, Scope(self.state, event, event.ts, DEFAULT_PROGRAM, "UTC"), event)


def eligible(found: list[Input]) -> tuple[str, ...]:
    [context] = [i for i in found if isinstance(i, Context)]
    return context.eligible


def test_what_becomes_eligible_as_a_shopper_acts() -> None:
    s = Shopper()
    assert eligible(s.do(ev.PageView)) == ("nothing",)
    for sku in ("a", "b"):
        assert eligible(s.do(ev.ProductView, sku=sku)) == ("nothing",)
    assert eligible(s.do(ev.ProductView, sku="c")) == ("bundle", "nothing")
    found = s.do(ev.AddToCart, sku="a", price=35.0)
    assert found[0] == Signal(
        customer_id="c1", at=found[0].at, value=0.5, source="add_to_cart", decision_id=""
    )
    assert eligible(found) == ("discount", "free_shipping", "bundle", "nothing")
    s.do(ev.Identify, traits=ev.Traits(email="c1@example.com"))
    found = s.do(ev.OrderPlaced, order_id="o1", total=35.0)
    assert isinstance(found[0], Signal) and found[0].value == 1.0
    # The cart is empty now, three views remain, and an identified member has ordered.
    assert eligible(found) == ("bundle", "loyalty_invite", "nothing")


def test_clicks_and_explicit_rewards_name_their_decision() -> None:
    s = Shopper()
    [click] = s.do(ev.Custom, name="offer_clicked", properties={"decision_id": "d1"})
    assert isinstance(click, Signal)
    assert (click.value, click.decision_id, click.explicit) == (0.2, "d1", False)
    [explicit] = s.do(ev.Custom, name=EXPLICIT_REWARD, properties={"decision_id": "d1", "value": 3})
    assert isinstance(explicit, Signal)
    assert (explicit.value, explicit.decision_id, explicit.explicit) == (1.0, "d1", True)
    assert s.do(ev.Custom, name=EXPLICIT_REWARD, properties={"value": 1}) == []
    assert s.do(ev.Custom, name="something_else") == []


def test_events_that_change_nothing_for_the_policy_say_nothing() -> None:
    s = Shopper()
    assert s.do(ev.MessageOpened, message_id="m", message_channel="email") == []


def test_a_condition_that_fails_does_not_hold() -> None:
    text = SHIPPED.read_text(encoding="utf-8").replace(
        "eligible: cart.value >= rule.params.min_cart && profile.orders < 3",
        "eligible: 10 / (profile.orders - profile.orders) > 1",
    )
    book = load_actions("actions.yaml", text).book
    assert book is not None
    assert "discount" not in eligible(Shopper(book=book).do(ev.PageView))


_EVENTS = st.sampled_from(
    [
        (ev.PageView, {}),
        (ev.ProductView, {"sku": "a", "category": "shoes"}),
        (ev.ProductView, {"sku": "b"}),
        (ev.AddToCart, {"sku": "a", "price": 999.0, "quantity": 3}),
        (ev.AddToCart, {"sku": "b", "price": 5.0}),
        (ev.RemoveFromCart, {"sku": "a"}),
        (ev.OrderPlaced, {"order_id": "o", "total": 12_000.0}),
        (ev.OrderPlaced, {"order_id": "p", "total": 20.0}),
        (ev.Identify, {"traits": ev.Traits(email="x@example.com")}),
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_EVENTS, min_size=1, max_size=40))
def test_features_stay_between_zero_and_one(steps: list[tuple[type[ev.BaseEvent], Any]]) -> None:
    s = Shopper()
    for i, (kind, fields) in enumerate(steps):
        fields = {**fields, "order_id": f"o{i}"} if kind is ev.OrderPlaced else fields
        for found in s.do(kind, **fields):
            if isinstance(found, Context):
                assert len(found.features) == len(FEATURE_NAMES)
                assert all(0.0 <= v <= 1.0 for v in found.features), found.features
                assert found.features[0] == 1.0
                assert found.eligible[-1] == "nothing"


@settings(max_examples=60)
@given(st.lists(_EVENTS, min_size=1, max_size=40))
def test_the_remembered_eligible_set_is_every_condition_evaluated_afresh(
    steps: list[tuple[type[ev.BaseEvent], Any]],
) -> None:
    """engine/nba/eligibility.py remembers the set per tuple of the values the
    conditions read: after any events it must be what each condition says."""
    s = Shopper()
    for i, (kind, fields) in enumerate(steps):
        fields = {**fields, "order_id": f"o{i}"} if kind is ev.OrderPlaced else fields
        for found in s.do(kind, **fields):
            if not isinstance(found, Context):
                continue
            assert s.state is not None
            scope = Scope(s.state, None, found.at, DEFAULT_PROGRAM, "UTC")
            afresh = tuple(
                a.id
                for a in BOOK.actions
                if a.id == BOOK.control
                or a.eligible is None
                or a.eligible.program.execute({n: scope.value(n) for n in a.eligible.needs}) is True
            )
            assert found.eligible == afresh
