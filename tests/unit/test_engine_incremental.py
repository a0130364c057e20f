"""What the engine writes and decides for a fixed stream, pinned as a digest.

The hot path of the engine is rewritten for speed; whatever it skips or keeps
must leave its results as they were: for every step of a stream with every
event type, the state's snapshot bytes, the serving view's bytes and the
effects in order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from engine import events as ev
from engine import identity
from engine.customer import Engine, ProfileChanged
from engine.decode import event_decoder
from engine.loyalty import DEFAULT_PROGRAM, LoyaltyProgram, Tier
from engine.profile import (
    CustomerState,
    decode_state,
    encode_state,
    encode_view,
    profile_view,
)
from tests.rules_helpers import compile_rules

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC).timestamp()
DAY = 86400.0

# Events -------------------------------------------------------------------------------

ZONES = ("Europe/Paris", "Asia/Kolkata", "America/New_York", "Not/AZone")
SKUS = ("s1", "s2", "s3", "s4")
CATEGORIES = ("candles", "kitchen", "toys", None)
CHANNELS = ("email", "email", "sms", "push")


def event_fields(kind: str, n: int, pick: Callable[[Sequence[Any]], Any]) -> dict[str, Any]:
    """The fields of an event of type ``kind`` beyond the common ones, as JSON."""
    sku, category = pick(SKUS), pick(CATEGORIES)
    order = f"o{pick(range(6))}"
    if kind == "identify":
        traits = {
            "email": pick(("a@example.com", None)),
            "first_name": pick(("Ann", "Bo", None)),
            "phone": pick(("+33600000000", None)),
            "push_token": pick(("tok", None)),
            "timezone": pick((*ZONES, None)),
            "postcode": pick(("75001", "EC1A 1BB", None)),
            "birthday": pick(("1980-07-01", "--02-29", "12-24", "bad", None)),
        }
        return {"traits": {k: v for k, v in traits.items() if v is not None}}
    if kind == "product_view":
        return {"sku": sku, "category": category, "price": pick((4.95, 12.5))}
    if kind == "add_to_cart":
        return {"sku": sku, "category": category, "price": pick((4.95, 12.5)), "quantity": 2}
    if kind == "remove_from_cart":
        return {"sku": sku, "quantity": pick((1, None))}
    if kind == "order_placed":
        items = [{"sku": s, "price": 4.95, "category": category} for s in SKUS[: pick((0, 1, 2))]]
        return {"order_id": order, "total": pick((0.0, 24.5, 300.0)), "items": items}
    if kind == "order_refunded":
        return {"order_id": order, "amount": pick((5.0, None))}
    if kind in ("support_ticket_opened", "support_ticket_closed"):
        return {"ticket_id": pick(("t1", "t2"))}
    if kind.startswith("message_"):
        return {"message_id": f"m{n}", "message_channel": pick(CHANNELS)}
    if kind == "consent_changed":
        return {"consent_channel": pick(CHANNELS), "granted": pick((True, False))}
    if kind == "loyalty_points_adjusted":
        return {"points": pick((-50, 20))}
    if kind == "search":
        return {"query": "mugs"}
    if kind == "store_visit":
        return {"store_id": "st1"}
    if kind == "custom":
        return {"name": "quiz"}
    return {}  # page_view, cart_viewed, checkout_started: the common fields are all


def make_event(
    kind: str, n: int, ts: float, pick: Callable[[Sequence[Any]], Any], **ids: str
) -> ev.BaseEvent:
    fields = {
        "type": kind,
        "event_id": f"e{n}",
        "timestamp": datetime.fromtimestamp(ts, tz=UTC).isoformat(),
        **ids,
        **event_fields(kind, n, pick),
    }
    return event_decoder.decode(msgspec.json.encode(fields))


def test_every_event_type_can_be_made() -> None:
    """A new event type must be added above."""
    for kind in ev.EVENT_TYPE_NAMES:
        assert ev.event_type(make_event(kind, 1, T0, lambda s: s[0], customer_id="c1")) == kind


# The whole engine: a digest of a fixed stream ------------------------------------------

RULES = {
    "policy.yaml": """
timezone: Europe/London
smart_sending: {email: 16h, sms: 16h}
quiet_hours: {start: "21:00", end: "08:00", channels: [sms, push]}
suppress_while_ticket_open: true
consent_required: [email, sms, push]
caps: {daily: 2, weekly: 5}
preferred_fallback: [email, push, sms, in_app]
""",
    "abandoned_cart.yaml": """
id: abandoned_cart
priority: 70
trigger: {event: add_to_cart}
wait:
  for: 30m
  cancel_on: [{event: order_placed}, {event: remove_from_cart, when: 'cart.quantity == 0'}]
conditions: ["cart.quantity > 0"]
action:
  channel: email
  template: abandoned-cart
  payload: {items: cart.items, cart_value: cart.value, recommendations: recommendations}
limits: {once_per: 1d}
holdout: 10
goal: {event: order_placed, within: 3d, when: 'event.total > 10.0'}
""",
    "browse.yaml": """
id: browse
priority: 40
trigger: {event: product_view, when: item.views >= 2 && !item.in_cart}
wait: {for: 1h, restart: false, cancel_on: [{event: add_to_cart}, {event: order_placed}]}
action:
  channel: preferred
  template: browse
  payload: {sku: event.sku, name: event.name, recommendations: recommendations}
limits: {once_per: 7d}
holdout: 10
goal: {event: add_to_cart, within: 2d}
""",
    "replenishment.yaml": """
id: replenishment
priority: 35
params: {interval_days: {candles: 6, kitchen: 4}}
trigger: {event: order_placed, when: 'event.categories.exists(c, c in rule.params.interval_days)'}
wait:
  for_days: >
    min(event.categories.filter(c, c in rule.params.interval_days)
        .map(c, rule.params.interval_days[c]))
action:
  channel: sms
  template: replenishment
  payload: {categories: 'event.categories.filter(c, c in rule.params.interval_days)'}
goal: {event: order_placed, within: 7d}
""",
    "review.yaml": """
id: review
category: transactional
priority: 20
trigger: {event: order_placed}
wait: {for: 2d, restart: false, cancel_on: [{event: order_refunded}]}
action: {channel: webhook, template: review, payload: {order_id: event.order_id, skus: event.skus}}
""",
    "near_next_tier.yaml": """
id: near_next_tier
priority: 50
trigger:
  event: order_placed
  when: profile.next_tier != "" && profile.tier_spend >= 0.5 * profile.next_tier_spend
action: {channel: email, template: near, payload: {missing: profile.to_next_tier}}
limits: {once_per: 30d}
""",
    "tier_upgrade.yaml": """
id: tier_upgrade
category: transactional
priority: 60
trigger: {attribute: tier, change: up}
action: {channel: email, template: tier, payload: {tier: profile.tier, was: profile.previous_tier}}
""",
    "big_spender.yaml": """
id: big_spender
priority: 10
trigger: {attribute: spend_12m, above: 250}
action: {channel: push, template: big}
""",
    "greeting.yaml": """
id: greeting
priority: 15
trigger: {event: search, when: 'profile.traits.first_name.startsWith("A")'}
action: {channel: in_app, template: greeting}
""",
    "welcome.yaml": """
id: welcome
priority: 90
trigger:
  event: [identify, consent_changed]
  when: has(profile.traits.email) && has(profile.consent.email) && profile.consent.email
action: {channel: email, template: welcome, payload: {first: profile.traits.first_name}}
limits: {max_entries: 1}
""",
    "store_event.yaml": """
id: store_event
priority: 45
active: {from: "2026-11-15", until: "2026-12-12"}
params: {postcodes: ["75001", "EC1"]}
trigger:
  event: [page_view, product_view, identify]
  when: >
    has(profile.traits.postcode) &&
    rule.params.postcodes.exists(p, profile.traits.postcode.startsWith(p))
action: {channel: email, template: store}
limits: {max_entries: 1}
""",
    "birthday.yaml": """
id: birthday
priority: 60
trigger: {date: traits.birthday, at: "09:00"}
action: {channel: preferred, template: birthday, payload: {tier: profile.tier}}
""",
    "points_expiring.yaml": """
id: points_expiring
priority: 55
trigger: {date: points_expire_at, before: 3d, at: "10:00"}
conditions: [profile.points_expiring > 0]
action: {channel: email, template: points, payload: {points: profile.points_expiring}}
""",
    "win_back.yaml": """
id: win_back
priority: 30
trigger: {inactive_for: 5d}
conditions: [profile.orders >= 1, 'local.hour >= 0']
action: {channel: email, template: win-back, payload: {days: profile.days_since_last_seen}}
limits: {once_per: 6d}
goal: {event: order_placed, within: 4d}
""",
}
LOYALTY = LoyaltyProgram(
    tiers=(Tier("member", 0), Tier("silver", 100), Tier("gold", 400)),
    window_days=20,
    points_expire_days=10,
)


def stream(seed: int, n: int) -> list[ev.BaseEvent]:
    """Shoppers over a few weeks: known and anonymous ids, identifies that link
    them, every event type, late and repeated events."""
    rng = random.Random(seed)
    out: list[ev.BaseEvent] = []
    ts = T0
    kinds = [*ev.EVENT_TYPE_NAMES, *["product_view"] * 8, *["add_to_cart", "page_view"] * 3]
    for i in range(n):
        ts += rng.expovariate(1 / 1800.0)
        c = rng.randrange(60)
        kind = rng.choice(kinds)
        at = ts - rng.uniform(0, 6 * 3600) if rng.random() < 0.1 else ts
        ids: dict[str, str] = {"customer_id": f"c{c}"}
        if c % 4 == 0 and kind in ("page_view", "product_view", "add_to_cart", "identify"):
            ids["anonymous_id"] = f"a{c}-{rng.randrange(2)}"
            if kind != "identify" and rng.random() < 0.5:
                del ids["customer_id"]
        event = make_event(kind, i, at, rng.choice, **ids)
        out.append(event)
        if rng.random() < 0.02:
            out.append(event)  # delivered twice
    return out


def engine_digest(engine: Engine, events: list[ev.BaseEvent], snapshot_every: int) -> str:
    """What the engine wrote and decided, step by step, as one digest: each
    state's snapshot bytes, its view bytes and the effects in order."""
    digest = hashlib.sha256()
    states: dict[str, CustomerState] = {}
    anonymous: dict[str, identity.AnonymousState] = {}
    steps = 0

    def record(state: CustomerState, effects: Sequence[object]) -> CustomerState:
        nonlocal steps
        raw = encode_state(state)
        digest.update(raw + encode_view(profile_view(state)))
        for e in effects:
            digest.update(b"PC" if isinstance(e, ProfileChanged) else repr(e).encode())
        steps += 1
        return decode_state(raw) if steps % snapshot_every == 0 else state

    def apply(key: str, event: ev.BaseEvent) -> None:
        state, effects = engine.apply(states.get(key), event)
        states[key] = record(state, effects)

    for n, event in enumerate(events):
        aid = event.anonymous_id
        if aid is not None and event.customer_id is None:
            anon, out = identity.resolve(engine, anonymous.get(aid), event)
            anonymous[aid] = anon
            for o in out:
                if isinstance(o, identity.ToCustomer) and o.event is not None:
                    apply(o.customer_id, o.event)
            if anon.profile is not None:
                anon.profile = record(anon.profile, out)
        else:
            link = identity.link_of(event)
            if link is not None:
                anonymous[link.anonymous_id], out = identity.resolve(
                    engine, anonymous.get(link.anonymous_id), link
                )
                for o in out:
                    if isinstance(o, identity.ToCustomer) and o.merge is not None:
                        state, effects = engine.absorb(
                            states.get(o.customer_id), o.merge, o.customer_id
                        )
                        states[o.customer_id] = record(state, effects)
            apply(event.customer_key, event)
        if n % 50 == 49:
            now = event.ts
            for key in sorted(states):
                due = Engine.next_due(states[key])
                if due is not None and due <= now:
                    states[key] = record(states[key], engine.fire_due(states[key], now))
            if n % 1000 == 999:
                key = sorted(states)[n % len(states)]
                state, effects = Engine.erase(states[key], key, now)
                states[key] = record(state, effects)
    last = events[-1].ts
    for key in sorted(states):
        states[key] = record(states[key], engine.fire_due(states[key], last + 40 * DAY))
    return f"{steps}:{digest.hexdigest()}"


# Computed with the engine before the hot path learnt to skip work (the first
# commit of this file). A change of this digest means the engine writes or
# decides something else for the same events: if that is the intent of the
# change, take the new value from the assertion message.
DIGEST = {
    "rules": "3758:56062a6c9fc608d69cb8a4ec8e53590ad3a8311bec2d7d7d1d82eae32ca7068d",
    "contactable": "3763:4a25f69d709bda6656ddfe60ae63a78496121e8b9d3f5fea33360cdfc806dd81",
    "no rules": "3131:c8e21a71aa85a271ff4f52ce53fcfc567809f6f529f20f22f2b35e3d8039bdda",
}


def test_the_engine_writes_and_decides_what_it_did_before_for_a_fixed_stream() -> None:
    events = stream(7, 3000)
    rules = compile_rules(RULES)
    got = {
        "rules": engine_digest(Engine(rules, loyalty=LOYALTY), events, 7),
        "contactable": engine_digest(
            Engine(rules.assuming_contactable(), loyalty=LOYALTY), events, 3
        ),
        "no rules": engine_digest(Engine(loyalty=DEFAULT_PROGRAM), events, 5),
    }
    assert got == DIGEST
