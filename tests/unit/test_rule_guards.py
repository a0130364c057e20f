"""The policy's promises, checked over random event sequences and clocks.

Whatever customers do and whenever they do it, a marketing message is never
decided while a ticket is open, twice on a channel within the smart-sending
window, inside quiet hours, or without consent; caps hold in every rolling
window; deferrals are decided again, never dropped; and hold-outs take their
share. Each property is checked against a small independent model of the
customer's facts, rebuilt from the same events.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.customer import Engine
from engine.decode import event_decoder
from engine.events import BaseEvent
from engine.rules.guards import holdout_bucket
from engine.rules.simulate import Simulation
from engine.triggers import Decision, Trigger, TriggerFired
from tests.rules_helpers import compile_rules

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0
SMART_SENDING_S = 16 * HOUR
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
CHANNELS = ("email", "sms", "push")

POLICY = """
timezone: UTC
smart_sending: {email: 16h, sms: 16h, push: 16h}
quiet_hours: {start: "21:00", end: "08:00", channels: [sms, push]}
suppress_while_ticket_open: true
consent_required: [email, sms, push]
caps: {daily: 2, weekly: 5}
"""


def _rule(rule_id: str, trigger: str, channel: str, extra: str = "") -> str:
    return f"""
id: {rule_id}
trigger: {{event: {trigger}}}
action: {{channel: {channel}, template: t}}
{extra}
"""


# Marketing rules that fire often, on every channel, with and without waits.
RULES = compile_rules(
    {
        "policy.yaml": POLICY,
        "view_mail.yaml": _rule("view_mail", "product_view", "email"),
        "search_push.yaml": _rule("search_push", "search", "push"),
        "cart_sms.yaml": _rule(
            "cart_sms",
            "add_to_cart",
            "sms",
            "wait: {for: 45m, cancel_on: [{event: order_placed}]}\nholdout: 20",
        ),
        "order_any.yaml": _rule("order_any", "order_placed", "preferred", "wait: {for: 5h}"),
    }
)


@dataclass
class Facts:
    """The model: each customer's facts over time, from the generated events."""

    tickets: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    consent: dict[tuple[str, str], list[tuple[float, bool]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    zone: dict[str, str] = field(default_factory=dict)

    def open_tickets(self, customer: str, at: float) -> int:
        return sum(delta for ts, delta in self.tickets[customer] if ts <= at)

    def consents(self, customer: str, channel: str, at: float) -> bool:
        decisions = [granted for ts, granted in self.consent[(customer, channel)] if ts <= at]
        return bool(decisions) and decisions[-1]


# Weighted by repetition: shopping is common, tickets and consent changes rarer.
EVENT_KINDS = (
    *("product_view",) * 3,
    *("search",) * 2,
    *("add_to_cart",) * 3,
    "order_placed",
    "ticket",
    "consent",
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[BaseEvent], Facts]:
    customers = draw(st.integers(1, 4))
    facts = Facts()
    events: list[dict[str, object]] = []
    clock = T0
    for c in range(customers):
        zone = draw(st.sampled_from(ZONES))
        facts.zone[f"c{c}"] = zone
        traits: dict[str, str] = {"timezone": zone}
        if draw(st.booleans()) or c == 0:
            traits["email"] = f"c{c}@example.com"
        if draw(st.booleans()):
            traits["phone"] = f"+3360000000{c}"
        if draw(st.booleans()):
            traits["push_token"] = f"fcm-c{c}"
        events.append({"type": "identify", "customer_id": f"c{c}", "traits": traits, "ts": clock})
        for channel in CHANNELS:  # most customers start out consenting
            granted = draw(st.integers(0, 4)) > 0
            clock += 0.5
            events.append(
                {
                    "type": "consent_changed",
                    "customer_id": f"c{c}",
                    "consent_channel": channel,
                    "granted": granted,
                    "ts": clock,
                }
            )
            facts.consent[(f"c{c}", channel)].append((clock, granted))
    open_tickets: dict[str, list[str]] = defaultdict(list)
    for n in range(draw(st.integers(1, 45))):
        # Gaps from seconds to days, with a fraction so no two times coincide.
        clock += draw(
            st.sampled_from((7.0, 300.0, 2700.0, 2 * HOUR, 4 * HOUR, 11 * HOUR, 30 * HOUR))
        )
        clock += draw(st.floats(0.001, 0.999))
        customer = f"c{draw(st.integers(0, customers - 1))}"
        kind = draw(st.sampled_from(EVENT_KINDS))
        event: dict[str, object] = {"customer_id": customer, "ts": clock}
        if kind == "product_view":
            event |= {"type": kind, "sku": "sku-1"}
        elif kind == "search":
            event |= {"type": kind, "query": "mugs"}
        elif kind == "add_to_cart":
            event |= {"type": kind, "sku": "sku-1", "price": 3.0}
        elif kind == "order_placed":
            event |= {"type": kind, "order_id": f"o{n}", "total": 10.0}
        elif kind == "ticket":
            close = draw(st.booleans())
            if open_tickets[customer] and close:
                ticket = open_tickets[customer].pop()
                event |= {"type": "support_ticket_closed", "ticket_id": ticket}
                facts.tickets[customer].append((clock, -1))
            else:
                ticket = f"t{n}"
                open_tickets[customer].append(ticket)
                event |= {"type": "support_ticket_opened", "ticket_id": ticket}
                facts.tickets[customer].append((clock, 1))
        else:
            channel = draw(st.sampled_from(CHANNELS))
            granted = draw(st.booleans())
            event |= {"type": "consent_changed", "consent_channel": channel, "granted": granted}
            facts.consent[(customer, channel)].append((clock, granted))
        events.append(event)
    return [_event(i, e) for i, e in enumerate(events)], facts


def _event(i: int, fields: dict[str, object]) -> BaseEvent:
    ts = fields.pop("ts")
    assert isinstance(ts, float)
    fields["event_id"] = f"e{i}"
    fields["timestamp"] = datetime.fromtimestamp(ts, tz=UTC).isoformat()
    return event_decoder.decode(msgspec.json.encode(fields))


def simulate(events: list[BaseEvent]) -> tuple[list[Decision], list[Trigger]]:
    until = events[-1].ts + 3 * 86400.0  # long enough for every wait and deferral
    effects = list(Simulation(Engine(RULES)).run(events, until=until))
    decisions = [e for e in effects if isinstance(e, Decision)]
    triggers = [e.trigger for e in effects if isinstance(e, TriggerFired)]
    return decisions, triggers


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


@given(histories())
@PROPERTY_SETTINGS
def test_no_marketing_while_a_ticket_is_open(history: tuple[list[BaseEvent], Facts]) -> None:
    events, facts = history
    _decisions, triggers = simulate(events)
    for t in triggers:
        assert facts.open_tickets(t.customer_id, t.fired_at) == 0, t


@given(histories())
@PROPERTY_SETTINGS
def test_nothing_without_consent_on_a_consent_channel(
    history: tuple[list[BaseEvent], Facts],
) -> None:
    events, facts = history
    _decisions, triggers = simulate(events)
    for t in triggers:
        if t.channel in CHANNELS:  # in-app and webhook need no consent
            assert facts.consents(t.customer_id, t.channel, t.fired_at), t


@given(histories())
@PROPERTY_SETTINGS
def test_never_two_sends_on_a_channel_within_the_smart_sending_window(
    history: tuple[list[BaseEvent], Facts],
) -> None:
    events, _facts = history
    _decisions, triggers = simulate(events)
    sends: dict[tuple[str, str], list[float]] = defaultdict(list)
    for t in triggers:
        if t.channel in CHANNELS:  # the channels the policy gives a window
            bisect.insort(sends[(t.customer_id, t.channel)], t.fired_at)
    for times in sends.values():
        for a, b in itertools.pairwise(times):
            assert b - a >= SMART_SENDING_S, times


@given(histories())
@PROPERTY_SETTINGS
def test_never_inside_quiet_hours_in_the_customers_own_zone(
    history: tuple[list[BaseEvent], Facts],
) -> None:
    events, facts = history
    _decisions, triggers = simulate(events)
    for t in triggers:
        if t.channel in ("sms", "push"):
            local = datetime.fromtimestamp(t.fired_at, tz=ZoneInfo(facts.zone[t.customer_id]))
            assert 8 <= local.hour < 21, (t, local)


@given(histories())
@PROPERTY_SETTINGS
def test_caps_hold_in_every_rolling_day_and_week(history: tuple[list[BaseEvent], Facts]) -> None:
    events, _facts = history
    _decisions, triggers = simulate(events)
    per_customer: dict[str, list[float]] = defaultdict(list)
    for t in triggers:
        bisect.insort(per_customer[t.customer_id], t.fired_at)
    for times in per_customer.values():
        for limit, period in ((2, 86400.0), (5, 7 * 86400.0)):
            for i in range(len(times) - limit):
                assert times[i + limit] - times[i] >= period, times


@given(histories())
@PROPERTY_SETTINGS
def test_a_deferral_is_decided_again_never_dropped(history: tuple[list[BaseEvent], Facts]) -> None:
    """Decided again when quiet hours end, unless a cancel_on event (an order) came first."""
    events, _facts = history
    decisions, _triggers = simulate(events)
    for i, d in enumerate(decisions):
        if d.outcome == "deferred":
            later = [x for x in decisions[i + 1 :] if x.trigger_id == d.trigger_id]
            assert later, f"deferred {d} was never decided again"
            again = later[0]
            assert again.at == d.until or (again.outcome == "cancelled" and again.at < d.until)


@given(st.sampled_from((5.0, 10.0, 30.0, 50.0)), st.text(min_size=1, max_size=8))
@settings(max_examples=12, deadline=None)
def test_the_holdout_share_is_within_statistical_bounds(percent: float, salt: str) -> None:
    """A stable hash per customer and rule: the held-out share of many customers
    stays within five standard deviations of the configured percentage."""
    n = 4000
    p = percent / 100
    held = sum(holdout_bucket(f"{salt}-{i}", "some_rule") < p for i in range(n))
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(held - n * p) <= 5 * sigma, (held, n * p)


def test_the_holdout_is_recorded_not_sent_and_stable_per_customer() -> None:
    """Through the engine: held-out customers get a decision, never a trigger,
    and the same customers are held out on every run."""
    events = []
    for i in range(600):
        customer = f"h{i}"
        events += [
            _event(3 * i, {"type": "identify", "customer_id": customer, "ts": T0 + i,
                           "traits": {"phone": "+1", "timezone": "Europe/Paris"}}),
            _event(3 * i + 1, {"type": "consent_changed", "customer_id": customer,
                               "ts": T0 + i + 0.1, "consent_channel": "sms", "granted": True}),
            _event(3 * i + 2, {"type": "add_to_cart", "customer_id": customer,
                               "ts": T0 + i + 0.2, "sku": "s", "price": 1.0}),
        ]  # fmt: skip
    decisions, triggers = simulate(events)
    held = {d.customer_id for d in decisions if d.outcome == "held_out"}
    sent = {t.customer_id for t in triggers if t.rule_id == "cart_sms"}
    assert held and sent and not held & sent
    assert held == {f"h{i}" for i in range(600) if holdout_bucket(f"h{i}", "cart_sms") < 0.2}
    assert abs(len(held) - 120) <= 5 * math.sqrt(600 * 0.2 * 0.8)


def _push_customer(customer: str, i: int, traits: dict[str, str]) -> list[BaseEvent]:
    """A customer who consents to push and then searches (search_push fires at once)."""
    return [
        _event(i, {"type": "identify", "customer_id": customer, "ts": T0 + 3 * HOUR,
                   "traits": {"timezone": "UTC", **traits}}),
        _event(i + 1, {"type": "consent_changed", "customer_id": customer,
                       "ts": T0 + 3 * HOUR + 1, "consent_channel": "push", "granted": True}),
        _event(i + 2, {"type": "search", "customer_id": customer,
                       "ts": T0 + 3 * HOUR + 2, "query": "mugs"}),
    ]  # fmt: skip


def test_push_without_a_device_token_is_suppressed_as_unreachable() -> None:
    decisions, triggers = simulate(_push_customer("c-no-app", 0, {"email": "a@example.com"}))
    [decision] = [d for d in decisions if d.rule_id == "search_push"]
    assert (decision.outcome, decision.reason) == ("suppressed", "unreachable")
    assert triggers == []


def test_push_with_a_device_token_fires_and_carries_it_as_the_recipient() -> None:
    traits = {"email": "b@example.com", "push_token": "fcm-token-b"}
    _decisions, triggers = simulate(_push_customer("c-app", 0, traits))
    [trigger] = [t for t in triggers if t.rule_id == "search_push"]
    assert trigger.channel == "push"
    assert trigger.recipient == {"email": "b@example.com", "push_token": "fcm-token-b"}
