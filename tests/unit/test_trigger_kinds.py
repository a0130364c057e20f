"""The contract every trigger kind keeps: event, wait with cancel, inactivity,
attribute threshold, date.

A kind is right when its decisions depend only on the events: not on how
often or when the dataflow polls for due actions, not on a crash and a restore
of the state from a snapshot in between, and never two sends with one id.
Adding a kind means adding its rule to ``KINDS``; this test tells whether it
keeps the contract.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.customer import Engine
from engine.decode import event_decoder
from engine.events import BaseEvent
from engine.rules.simulate import Simulation
from engine.triggers import Decision, TriggerFired
from tests.rules_helpers import compile_rules

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC).timestamp()
DAY = 86400.0

_ACTION = "action: {channel: webhook, template: t}\ncategory: transactional"
KINDS = {
    "event": "trigger: {event: product_view, when: item.views >= 2}",
    "wait_with_cancel": (
        "trigger: {event: add_to_cart}\nwait: {for: 1h, cancel_on: [{event: order_placed}]}"
    ),
    "inactivity": "trigger: {inactive_for: 2d}\nconditions: ['profile.orders >= 1']",
    "attribute": "trigger: {attribute: loyalty_points, above: 100}",
    "date": "trigger: {date: traits.birthday, at: '09:00'}",
}


def _rules(kind: str) -> Engine:
    text = f"id: {kind}\n{KINDS[kind]}\n{_ACTION}\n"
    return Engine(compile_rules({f"{kind}.yaml": text}))


@st.composite
def streams(draw: st.DrawFn) -> list[BaseEvent]:
    clock = T0
    events: list[BaseEvent] = []
    for i in range(draw(st.integers(1, 30))):
        clock += draw(st.sampled_from((1.0, 600.0, 3 * 3600.0, DAY, 3 * DAY))) + i * 1e-3
        customer = f"c{draw(st.integers(0, 2))}"
        kind = draw(st.sampled_from(("view", "cart", "order", "identify", "page")))
        fields: dict[str, object] = {"customer_id": customer, "event_id": f"e{i}"}
        if kind == "view":
            fields |= {"type": "product_view", "sku": draw(st.sampled_from(("a", "b")))}
        elif kind == "cart":
            fields |= {"type": "add_to_cart", "sku": "a", "price": 2.0}
        elif kind == "order":
            fields |= {"type": "order_placed", "order_id": f"o{i}", "total": 60.0}
        elif kind == "identify":
            day = draw(st.integers(1, 28))
            fields |= {"type": "identify", "traits": {"birthday": f"1990-03-{day:02d}"}}
        else:
            fields |= {"type": "page_view"}
        fields["timestamp"] = datetime.fromtimestamp(clock, tz=UTC).isoformat()
        events.append(event_decoder.decode(msgspec.json.encode(fields)))
    return events


def decisions_of(effects: list[object]) -> list[tuple[str, str, str, float]]:
    return [
        (d.customer_id, d.outcome, d.trigger_id, d.at) for d in effects if isinstance(d, Decision)
    ]


def straight(kind: str, events: list[BaseEvent], until: float) -> list[object]:
    return list(Simulation(_rules(kind)).run(events, until=until))


@pytest.mark.parametrize("kind", KINDS)
@given(events=streams(), data=st.data())
@settings(max_examples=60, deadline=None)
def test_decisions_do_not_depend_on_polling_or_on_crashes(
    kind: str, events: list[BaseEvent], data: st.DataObject
) -> None:
    until = events[-1].ts + 40 * DAY
    expected = straight(kind, events, until)

    simulation = Simulation(_rules(kind))
    effects: list[object] = []
    for event in events:
        if data.draw(st.booleans(), label="poll before"):
            # The dataflow may ask for due actions at any time up to the stream's time.
            effects += simulation.advance(
                data.draw(st.floats(simulation.clock, event.ts), label="poll at")
                if simulation.clock < event.ts
                else event.ts
            )
        if data.draw(st.booleans(), label="crash"):
            # A restore: every state comes back from its pickled snapshot.
            simulation.customers = pickle.loads(pickle.dumps(simulation.customers))
        effects += simulation.feed(event)
    effects += simulation.advance(until)
    assert decisions_of(effects) == decisions_of(expected)


@pytest.mark.parametrize("kind", KINDS)
@given(events=streams())
@settings(max_examples=40, deadline=None)
def test_a_trigger_id_is_never_sent_twice(kind: str, events: list[BaseEvent]) -> None:
    effects = straight(kind, events, events[-1].ts + 40 * DAY)
    ids = [e.trigger.trigger_id for e in effects if isinstance(e, TriggerFired)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_fires_in_its_basic_scenario(kind: str) -> None:
    """The contract is not met vacuously: each kind does fire."""

    def event(i: int, at: float, **fields: object) -> BaseEvent:
        fields |= {"customer_id": "c1", "event_id": f"b{i}"}
        fields["timestamp"] = datetime.fromtimestamp(at, tz=UTC).isoformat()
        return event_decoder.decode(msgspec.json.encode(fields))

    events = [
        event(1, T0, type="identify", traits={"birthday": "1990-03-03"}),
        event(2, T0 + 60, type="product_view", sku="a"),
        event(3, T0 + 120, type="product_view", sku="a"),
        event(4, T0 + 180, type="add_to_cart", sku="a", price=2.0),
        event(5, T0 + 7200, type="order_placed", order_id="o1", total=150.0),
    ]
    effects = straight(kind, events, T0 + 10 * DAY)
    assert [e for e in effects if isinstance(e, TriggerFired)], decisions_of(effects)
