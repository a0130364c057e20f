"""Rule runtime details that the shipped rules do not exercise on their own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from engine.customer import Engine
from engine.decode import event_decoder
from engine.events import BaseEvent
from engine.rules.ruleset import RuleBook
from engine.rules.simulate import Simulation
from engine.rules.validate import load
from engine.triggers import Decision, TriggerFired
from tests.rules_helpers import compile_rules

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
POLICY = "caps: {daily: 1}\nsmart_sending: {}\nquiet_hours: null\n"


def event(i: int, at: float, **fields: Any) -> BaseEvent:
    fields.setdefault("customer_id", "c1")
    fields["event_id"] = f"e{i}"
    fields["timestamp"] = datetime.fromtimestamp(at, tz=UTC).isoformat()
    return event_decoder.decode(msgspec.json.encode(fields))


def contact(at: float = T0) -> list[BaseEvent]:
    return [
        event(900, at, type="identify", traits={"email": "c1@example.com"}),
        event(901, at, type="consent_changed", consent_channel="email", granted=True),
    ]


def run(rules: Engine, events: list[BaseEvent], days: float = 5) -> list[Any]:
    return list(Simulation(rules).run(events, until=events[-1].ts + days * DAY))


def decisions(effects: list[Any], outcome: str | None = None) -> list[Decision]:
    return [e for e in effects if isinstance(e, Decision) and outcome in (None, e.outcome)]


def test_of_two_actions_due_at_once_the_higher_priority_gets_the_only_send() -> None:
    """With a daily cap of one, priority decides, not the rules' names."""
    rules = compile_rules(
        {
            "policy.yaml": POLICY,
            "aa.yaml": "id: aa\npriority: 10\ntrigger: {event: add_to_cart}\nwait: {for: 1h}\n"
            "action: {channel: email, template: t}\n",
            "zz.yaml": "id: zz\npriority: 90\ntrigger: {event: add_to_cart}\nwait: {for: 1h}\n"
            "action: {channel: email, template: t}\n",
        }
    )
    effects = run(
        Engine(rules), [*contact(), event(1, T0 + 10, type="add_to_cart", sku="s", price=1.0)]
    )
    fired = [d.rule_id for d in decisions(effects, "fired")]
    capped = [(d.rule_id, d.reason) for d in decisions(effects, "suppressed")]
    assert fired == ["zz"] and capped == [("aa", "daily_cap")]


def test_a_failing_trigger_condition_is_an_error_decision_saying_why() -> None:
    rules = compile_rules(
        {
            "policy.yaml": POLICY,
            "big_spender.yaml": "id: big_spender\n"
            "trigger: {event: page_view, when: 'profile.traits.first_name.startsWith(\"A\")'}\n"
            "action: {channel: email, template: t}\n",
        }
    )
    effects = run(Engine(rules), [*contact(), event(1, T0 + 10, type="page_view")])
    [error] = decisions(effects, "error")
    assert error.rule_id == "big_spender" and error.category == "marketing"
    assert error.reason.startswith("profile.traits.first_name.startsWith")


def test_a_goal_condition_decides_which_events_convert() -> None:
    rules = compile_rules(
        {
            "policy.yaml": POLICY,
            "nudge.yaml": "id: nudge\ntrigger: {event: page_view}\n"
            "action: {channel: email, template: t}\n"
            "goal: {event: order_placed, when: 'event.total >= 50.0', within: 2d}\n",
        }
    )
    events = [
        *contact(),
        event(1, T0 + 10, type="page_view"),
        event(2, T0 + 20, type="order_placed", order_id="small", total=10.0),
        event(3, T0 + 30, type="order_placed", order_id="big", total=80.0),
    ]
    converted = decisions(run(Engine(rules), events), "converted")
    assert [(d.reason, d.at) for d in converted] == [("treated", T0 + 30)]


def test_a_birthday_moves_with_the_customer_and_still_comes_every_year() -> None:
    rules = compile_rules(
        {
            "policy.yaml": POLICY,
            "birthday.yaml": "id: birthday\ntrigger: {date: traits.birthday, at: '09:00'}\n"
            "action: {channel: email, template: t}\n",
        }
    )
    events = [
        event(
            1, T0, type="identify", traits={"birthday": "1990-03-05", "timezone": "Europe/London"}
        ),
        *contact(T0 + 1),
        # After the 2026 birthday (09:00 London), the customer moves to New York.
        event(2, T0 + 10 * DAY, type="identify", traits={"timezone": "America/New_York"}),
    ]
    fired = [
        e.trigger.fired_at
        for e in run(Engine(rules), events, days=800)
        if isinstance(e, TriggerFired)
    ]
    assert [datetime.fromtimestamp(t, tz=UTC).isoformat() for t in fired] == [
        "2026-03-05T09:00:00+00:00",  # 09:00 in London
        "2027-03-05T14:00:00+00:00",  # 09:00 in New York
        "2028-03-05T14:00:00+00:00",
    ]


def test_a_wait_of_a_removed_rule_is_cancelled_with_its_id() -> None:
    """A new version without the rule: the pending wait ends, on record."""
    files = {
        "policy.yaml": POLICY,
        "cart.yaml": "id: cart\ntrigger: {event: add_to_cart}\nwait: {for: 1h}\n"
        "action: {channel: email, template: t}\n",
    }
    book = RuleBook(compile_rules(files))
    book.add(T0 + 600, compile_rules({"policy.yaml": POLICY}))
    effects = run(
        Engine(book), [*contact(), event(1, T0 + 10, type="add_to_cart", sku="s", price=1.0)]
    )
    [cancelled] = decisions(effects, "cancelled")
    assert (cancelled.reason, cancelled.entry, cancelled.origin_event_id) == (
        "rule_removed",
        1,
        "e1",
    )
    assert cancelled.trigger_id
    assert not decisions(effects, "fired")


def test_counts_of_unseen_event_types_read_as_zero() -> None:
    rules = compile_rules(
        {
            "policy.yaml": POLICY,
            "browsy.yaml": "id: browsy\n"
            "trigger: {event: page_view, when: profile.event_counts.product_view == 0}\n"
            "action: {channel: email, template: t}\n",
        }
    )
    effects = run(Engine(rules), [*contact(), event(1, T0 + 10, type="page_view")])
    assert [d.outcome for d in decisions(effects)] == ["fired"]


def test_a_misspelt_trait_or_channel_is_reported_with_a_suggestion() -> None:
    problems = load(
        {
            "x.yaml": "id: x\n"
            "trigger: {event: identify, when: 'has(profile.traits.frist_name) && "
            "profile.consent.emial'}\n"
            "action: {channel: email, template: t}\n"
        }
    ).problems
    assert [p.message for p in problems] == [
        "`profile.traits` never holds `frist_name`; did you mean `first_name`?",
        "`profile.consent` never holds `emial`; did you mean `email`?",
    ]


def test_payload_maps_come_out_in_one_order_whatever_the_process() -> None:
    """The CEL interpreter returns maps in a per-process order; a trigger decided
    again after a restart must be the same bytes, so payload maps are sorted."""
    rules = compile_rules(
        {
            "policy.yaml": POLICY,
            "cart.yaml": "id: cart\ncategory: transactional\ntrigger: {event: add_to_cart}\n"
            "action: {channel: webhook, template: t, payload: {items: cart.items, "
            'extra: \'{"zeta": 1, "alpha": 2, "mid": 3}\'}}\n',
        }
    )
    effects = run(Engine(rules), [event(1, T0, type="add_to_cart", sku="s", price=1.0, name="n")])
    [trigger] = [e.trigger for e in effects if isinstance(e, TriggerFired)]
    assert list(trigger.payload["extra"]) == ["alpha", "mid", "zeta"]
    assert list(trigger.payload["items"][0]) == ["category", "name", "price", "quantity", "sku"]


def test_a_payload_of_one_variable_is_its_value_as_the_interpreter_would_give_it() -> None:
    """``cart.items`` alone skips the interpreter (it would convert the list of
    maps both ways); the trigger must carry what the interpreter returns."""
    files = {
        "policy.yaml": POLICY,
        "cart.yaml": "id: cart\ncategory: transactional\ntrigger: {event: add_to_cart}\n"
        "action: {channel: webhook, template: t, payload: {items: cart.items, "
        "value: cart.value, first: 'has(profile.traits.first_name)', "
        "sku: event.sku, same: '[cart.items][0]'}}\n",
    }
    rules = compile_rules(files)
    direct = {name: e.direct for name, e in rules.by_id["cart"].payload}
    assert direct == {"items": True, "value": True, "first": True, "sku": True, "same": False}
    effects = run(
        Engine(rules),
        [
            event(1, T0, type="add_to_cart", sku="s", price=2.5, quantity=2, name="n"),
            event(2, T0 + 1, type="add_to_cart", sku="t", price=1.0, category="c"),
        ],
    )
    last = [e.trigger for e in effects if isinstance(e, TriggerFired)][-1]
    assert last.payload["items"] == last.payload["same"]
    assert last.payload["value"] == 6.0 and last.payload["first"] is False
    assert last.payload["sku"] == "t"
