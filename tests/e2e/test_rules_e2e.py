"""Every shipped rule end to end: events through Kafka and the real dataflow to the triggers topic.

One dataflow process runs for the whole module, on a copy of the shipped rules
whose waits last seconds. Each rule has its own customers: positive ones that
must get exactly one message of the rule, and negative ones in the same
scenario that must not (with the decision that says why, where there is one).
All events are produced once, in event-time order, before the dataflow starts;
the triggers and decisions topics are read once, until every expected trigger
and decision has arrived. A failing test prints what the dataflow decided and
sent for the customer in question.

Time-based rules (win-back, birthday, replenishment, points expiring) use
events in the past: their actions are already due, decided as of their due
time, and fire as soon as the stream clock follows the wall clock, about 2 s
after the partitions go quiet (dataflows/stream_clock.py).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from confluent_kafka import Consumer

from engine.rules.guards import holdout_bucket
from engine.rules.ruleset import CompiledRule, RuleSet
from engine.triggers import trigger_id
from pulse.rules_files import copy_with_waits, load_rules
from pulse.settings import Settings, load_settings
from tests.e2e.conftest import SHORT_WAITS
from tests.helpers import PulseProcess, isolated_settings, produce_events, value_of

pytestmark = pytest.mark.e2e

DAY = 86400.0
WAIT_FOR_ALL_S = 60.0  # for every expected trigger and decision to arrive
GRACE_S = 1.0  # read on a little once they have, for anything unexpected
LONG_AGO = 400 * DAY  # when customers signed up: their welcome e-mail is long past
# The winter-market campaign of store_event runs 2026-11-15 to 2026-12-12.
STORE_VISIT = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC).timestamp()
BEFORE_CAMPAIGN = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC).timestamp()

RULE_IDS = (
    "abandoned_cart",
    "browse_abandonment",
    "tier_upgrade",
    "near_next_tier",
    "win_back",
    "welcome",
    "review_request",
    "birthday",
    "store_event",
    "replenishment",
    "points_expiring",
)


# Scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """One message the rule must send: exactly one trigger of the rule for ``customer``."""

    customer: str
    template: str
    fired_at: float  # event time of the decision: the trigger's time or the due time
    payload: dict[str, Any]
    channel: str = "email"
    origin_event_id: str = ""  # checked (with the trigger id) when given


@dataclass(frozen=True)
class NotSent:
    """A customer of the scenario who must get no message of the rule.

    ``outcome`` (and ``reason``, when given) is the decision that must be on
    record; an empty ``outcome`` means the rule never considered the customer.
    """

    customer: str
    outcome: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Scenario:
    rule_id: str
    expects: tuple[Expect, ...]
    negatives: tuple[NotSent, ...] = ()


class Script:
    """The events of every scenario, each with its event time."""

    def __init__(self) -> None:
        self._events: list[tuple[float, int, dict[str, Any]]] = []

    def add(self, customer: str, kind: str, at: float, **fields: Any) -> str:
        """Add one event of ``customer`` at ``at`` (epoch seconds); returns its id."""
        seq = len(self._events)
        event_id = f"{customer}/{seq}"
        event = {
            "type": kind,
            "event_id": event_id,
            "customer_id": customer,
            "timestamp": _rfc3339(at),
            **fields,
        }
        self._events.append((at, seq, event))
        return event_id

    def sign_up(
        self, customer: str, at: float, *, email: bool = True, consent: bool | None = True
    ) -> None:
        """Identify with a first name and (unless ``email`` is false) an e-mail address,
        then, unless ``consent`` is None, the e-mail consent decision a second later."""
        traits = {"first_name": customer.split("-")[1].title()}
        if email:
            traits["email"] = _email(customer)
        self.add(customer, "identify", at, traits=traits)
        if consent is not None:
            self.add(customer, "consent_changed", at + 1, consent_channel="email", granted=consent)

    def in_time_order(self) -> list[dict[str, Any]]:
        """All events sorted by event time, so every partition is read in time order."""
        return [event for _at, _seq, event in sorted(self._events, key=lambda e: (e[0], e[1]))]


@dataclass(frozen=True)
class World:
    script: Script
    rules: RuleSet
    now: float  # the wall clock when the scenarios were written, whole seconds
    t0: float  # when the short-wait scenarios happen: a few minutes ago
    zone: ZoneInfo  # the policy's time zone (no customer here has their own)

    def rule(self, rule_id: str) -> CompiledRule:
        return self.rules.by_id[rule_id]

    def wait_s(self, rule_id: str) -> float:
        wait = self.rule(rule_id).wait_s
        assert wait is not None, f"{rule_id} has no fixed wait"
        return wait


def _email(customer: str) -> str:
    return f"{customer}@example.com"


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat()


def _pick(name: str, rule: CompiledRule, *, held_out: bool = False) -> str:
    """The first id ``<name>-<n>`` that is (or is not) in the rule's hold-out group."""
    for n in range(1000):
        customer = f"{name}-{n}"
        if (holdout_bucket(customer, rule.id) < rule.holdout) == held_out:
            return customer
    raise AssertionError(f"no id for {name} with held_out={held_out}")


def _abandoned_cart(w: World) -> Scenario:
    s, t0, rule = w.script, w.t0, w.rule("abandoned_cart")
    alice = _pick("cart-alice", rule)
    s.sign_up(alice, w.now - LONG_AGO)
    s.add(alice, "product_view", t0 - 60, sku="MUG-1", price=7.5, name="Mug", category="mugs")
    s.add(alice, "product_view", t0 - 50, sku="VASE-1", price=30.0, name="Vase", category="decor")
    s.add(alice, "add_to_cart", t0, sku="MUG-1", price=7.5, quantity=2, name="Mug", category="mugs")
    last_add = s.add(
        alice, "add_to_cart", t0 + 1, sku="CANDLE-1", price=12.0, name="Candle", category="candles"
    )
    # Bob orders within the wait; Carl refused e-mail; Dora is in the hold-out group.
    bob = _pick("cart-bob", rule)
    s.sign_up(bob, w.now - LONG_AGO)
    s.add(bob, "add_to_cart", t0, sku="LAMP-1", price=20.0)
    s.add(
        bob,
        "order_placed",
        t0 + 1,
        order_id="cart-bob-o1",
        total=20.0,
        items=[{"sku": "LAMP-1", "price": 20.0}],
    )
    carl = _pick("cart-carl", rule)
    s.sign_up(carl, w.now - LONG_AGO, consent=False)
    s.add(carl, "add_to_cart", t0, sku="MUG-1", price=7.5)
    dora = _pick("cart-dora", rule, held_out=True)
    s.sign_up(dora, w.now - LONG_AGO)
    s.add(dora, "add_to_cart", t0, sku="MUG-1", price=7.5)
    return Scenario(
        "abandoned_cart",
        expects=(
            Expect(
                alice,
                "abandoned-cart",
                # The wait restarted from the latest add to cart.
                t0 + 1 + w.wait_s("abandoned_cart"),
                {
                    "items": [
                        {
                            "sku": "MUG-1",
                            "name": "Mug",
                            "category": "mugs",
                            "price": 7.5,
                            "quantity": 2,
                        },
                        {
                            "sku": "CANDLE-1",
                            "name": "Candle",
                            "category": "candles",
                            "price": 12.0,
                            "quantity": 1,
                        },
                    ],
                    "cart_value": 27.0,
                    "recommendations": ["VASE-1"],  # viewed, not in the cart
                },
                origin_event_id=last_add,
            ),
        ),
        negatives=(
            NotSent(bob, "cancelled", "order_placed"),
            NotSent(carl, "suppressed", "no_consent"),
            NotSent(dora, "held_out", "held_out"),
        ),
    )


def _browse_abandonment(w: World) -> Scenario:
    s, t0, rule = w.script, w.t0, w.rule("browse_abandonment")
    lamp = {"sku": "LAMP-7", "name": "Desk lamp", "price": 45.0, "category": "lighting"}
    rug = {"sku": "RUG-2", "name": "Rug", "price": 80.0, "category": "decor"}
    # Erin views the lamp twice and leaves; Fred views it twice and adds it to his cart.
    erin = _pick("browse-erin", rule)
    fred = _pick("browse-fred", rule)
    second_views = {}
    for customer in (erin, fred):
        s.sign_up(customer, w.now - LONG_AGO)
        s.add(customer, "product_view", t0 - 20, **lamp)
        s.add(customer, "product_view", t0 - 10, **rug)
        second_views[customer] = s.add(customer, "product_view", t0, **lamp)
    s.add(fred, "add_to_cart", t0 + 1, sku="LAMP-7", price=45.0)
    return Scenario(
        "browse_abandonment",
        expects=(
            Expect(
                erin,
                "browse-abandonment",
                t0 + w.wait_s("browse_abandonment"),
                {"sku": "LAMP-7", "name": "Desk lamp", "recommendations": ["LAMP-7", "RUG-2"]},
                origin_event_id=second_views[erin],
            ),
        ),
        negatives=(NotSent(fred, "cancelled", "add_to_cart"),),
    )


def _tier_upgrade(w: World) -> Scenario:
    s, t0 = w.script, w.t0
    # Transactional: Jack gets it without e-mail consent. Kate has no address.
    jack, kate = "tier-jack", "tier-kate"
    s.sign_up(jack, w.now - LONG_AGO, consent=None)
    s.sign_up(kate, w.now - LONG_AGO, email=False, consent=None)
    orders = {
        customer: s.add(
            customer,
            "order_placed",
            t0,
            order_id=f"{customer}-o1",
            total=300.0,
            items=[{"sku": "SOFA-1", "price": 300.0, "category": "furniture"}],
        )
        for customer in (jack, kate)
    }
    return Scenario(
        "tier_upgrade",
        expects=(
            Expect(
                jack,
                "tier-upgrade",
                t0,
                {"tier": "silver", "previous_tier": "member", "points": 300},
                origin_event_id=orders[jack],
            ),
        ),
        negatives=(NotSent(kate, "suppressed", "unreachable"),),
    )


def _near_next_tier(w: World) -> Scenario:
    s, t0 = w.script, w.t0
    # 230 of the 250 silver needs: within 10 %. Mia got her welcome e-mail an hour
    # before, so smart sending holds hers back.
    liam, mia = "near-liam", "near-mia"
    s.sign_up(liam, w.now - LONG_AGO)
    s.sign_up(mia, t0 - 3600)
    for customer in (liam, mia):
        s.add(
            customer,
            "order_placed",
            t0,
            order_id=f"{customer}-o1",
            total=230.0,
            items=[{"sku": "CHAIR-2", "price": 230.0, "category": "furniture"}],
        )
    return Scenario(
        "near_next_tier",
        expects=(Expect(liam, "near-next-tier", t0, {"next_tier": "silver", "missing": 20.0}),),
        negatives=(NotSent(mia, "suppressed", "smart_sending"),),
    )


def _win_back(w: World) -> Scenario:
    s, rule = w.script, w.rule("win_back")
    # Nina ordered 61 days ago and has not been back; Otto came 61 days ago but never ordered.
    nina = _pick("winback-nina", rule)
    ordered_at = w.now - 61 * DAY
    s.sign_up(nina, w.now - LONG_AGO)
    s.add(nina, "product_view", ordered_at - 60, sku="VASE-9", price=25.0, category="decor")
    s.add(
        nina,
        "order_placed",
        ordered_at,
        order_id="winback-nina-o1",
        total=50.0,
        items=[{"sku": "PLATE-3", "price": 50.0, "category": "tableware"}],
    )
    otto = _pick("winback-otto", rule)
    s.sign_up(otto, w.now - LONG_AGO)
    s.add(otto, "page_view", ordered_at, url="/")
    return Scenario(
        "win_back",
        expects=(
            Expect(
                nina,
                "win-back",
                ordered_at + 60 * DAY,
                {"days_away": 60.0, "favourites": ["VASE-9"]},
            ),
        ),
        negatives=(NotSent(otto, "exited", "condition: profile.orders >= 1"),),
    )


def _welcome(w: World) -> Scenario:
    s, t0 = w.script, w.t0
    # Yara signs up and consents (and identifies again later: still one welcome);
    # Zack signs up but refuses e-mail.
    yara, zack = "welcome-yara", "welcome-zack"
    s.sign_up(yara, t0 - 7200)
    s.add(yara, "identify", t0 - 3600, traits={"email": _email(yara), "last_name": "Quill"})
    s.sign_up(zack, t0 - 7200, consent=False)
    return Scenario(
        "welcome",
        expects=(Expect(yara, "welcome", t0 - 7200 + 1, {"first_name": "Yara"}),),
        negatives=(NotSent(zack),),
    )


def _review_request(w: World) -> Scenario:
    s, t0 = w.script, w.t0
    # Gina's order is reviewed; Hank's is refunded within the wait; Ivy has a ticket open.
    gina, hank, ivy = "review-gina", "review-hank", "review-ivy"
    items = [
        {"sku": "BOOK-1", "price": 20.0, "category": "books"},
        {"sku": "PEN-1", "price": 15.0, "category": "office"},
    ]
    orders = {}
    for customer in (gina, hank, ivy):
        s.sign_up(customer, w.now - LONG_AGO)
        orders[customer] = s.add(
            customer, "order_placed", t0, order_id=f"{customer}-o1", total=35.0, items=items
        )
    s.add(hank, "order_refunded", t0 + 1, order_id=f"{hank}-o1")
    s.add(ivy, "support_ticket_opened", t0 - 60, ticket_id="T-1", subject="Where is my pen?")
    return Scenario(
        "review_request",
        expects=(
            Expect(
                gina,
                "review-request",
                t0 + w.wait_s("review_request"),
                {"order_id": "review-gina-o1", "skus": ["BOOK-1", "PEN-1"]},
                origin_event_id=orders[gina],
            ),
        ),
        negatives=(
            NotSent(hank, "cancelled", "order_refunded"),
            NotSent(ivy, "suppressed", "open_ticket"),
        ),
    )


def _birthday(w: World) -> Scenario:
    s = w.script
    # Yesterday was their birthday; they told us three days ago. Quinn refused
    # e-mail: "preferred" falls back to in-app, which needs no consent.
    birthday = dt.datetime.fromtimestamp(w.now - DAY, tz=w.zone).date()
    due = dt.datetime(birthday.year, birthday.month, birthday.day, 9, 0, tzinfo=w.zone)
    pia, quinn = "birthday-pia", "birthday-quinn"
    s.sign_up(pia, w.now - LONG_AGO)
    s.sign_up(quinn, w.now - LONG_AGO, consent=False)
    for customer in (pia, quinn):
        s.add(
            customer,
            "identify",
            w.now - 3 * DAY,
            traits={"birthday": f"1990-{birthday:%m-%d}"},
        )
    return Scenario(
        "birthday",
        expects=(
            Expect(pia, "birthday", due.timestamp(), {"first_name": "Pia", "tier": "member"}),
            Expect(
                quinn,
                "birthday",
                due.timestamp(),
                {"first_name": "Quinn", "tier": "member"},
                channel="in_app",
            ),
        ),
    )


def _store_event(w: World) -> Scenario:
    s = w.script
    # Rosa lives near a store and visits during the campaign; Sam lives elsewhere;
    # Tara lives near one but visited before the campaign started.
    rosa, sam, tara = "store-rosa", "store-sam", "store-tara"
    for customer, postcode, visit in (
        (rosa, "75002", STORE_VISIT),
        (sam, "SW1A 1AA", STORE_VISIT),
        (tara, "75001", BEFORE_CAMPAIGN),
    ):
        s.sign_up(customer, visit - LONG_AGO)
        s.add(customer, "identify", visit - LONG_AGO + 2, traits={"postcode": postcode})
        s.add(customer, "page_view", visit, url="/")
    return Scenario(
        "store_event",
        expects=(
            Expect(
                rosa,
                "store-event-invitation",
                STORE_VISIT,
                {"event_name": "Winter market", "event_date": "2026-12-12", "postcode": "75002"},
            ),
        ),
        negatives=(NotSent(sam), NotSent(tara)),
    )


def _replenishment(w: World) -> Scenario:
    s = w.script
    # Uma bought candles (60 days) and kitchen things (45 days) 46 days ago. Vic
    # bought kitchen things 46 days ago and again 10 days ago: the wait started again.
    uma, vic = "restock-uma", "restock-vic"
    ordered_at = w.now - 46 * DAY
    s.sign_up(uma, w.now - LONG_AGO)
    s.add(
        uma,
        "order_placed",
        ordered_at,
        order_id="restock-uma-o1",
        total=40.0,
        items=[
            {"sku": "CANDLE-2", "price": 18.0, "category": "candles"},
            {"sku": "PAN-4", "price": 22.0, "category": "kitchen"},
        ],
    )
    s.sign_up(vic, w.now - LONG_AGO)
    for n, at in enumerate((ordered_at, w.now - 10 * DAY)):
        s.add(
            vic,
            "order_placed",
            at,
            order_id=f"restock-vic-o{n}",
            total=22.0,
            items=[{"sku": "PAN-4", "price": 22.0, "category": "kitchen"}],
        )
    return Scenario(
        "replenishment",
        expects=(
            Expect(
                uma,
                "replenishment",
                ordered_at + 45 * DAY,
                {"categories": ["candles", "kitchen"], "last_order": "restock-uma-o1"},
            ),
        ),
        negatives=(NotSent(vic, "entered"),),
    )


def _points_expiring(w: World) -> Scenario:
    s = w.script
    # Wes's points from an order 340 days ago expire in 25 days (they last 365):
    # the warning was due 30 days before, at 10:00. Xena's order was refunded.
    wes, xena = "points-wes", "points-xena"
    ordered_at = w.now - 340 * DAY
    for customer in (wes, xena):
        s.sign_up(customer, w.now - LONG_AGO)
        s.add(
            customer,
            "order_placed",
            ordered_at,
            order_id=f"{customer}-o1",
            total=120.0,
            items=[{"sku": "LAMP-3", "price": 120.0, "category": "lighting"}],
        )
    s.add(xena, "order_refunded", ordered_at + DAY, order_id=f"{xena}-o1")
    expire_at = ordered_at + 365 * DAY
    expiry_date = dt.datetime.fromtimestamp(expire_at, tz=w.zone).date()
    due = dt.datetime.combine(expiry_date, dt.time(10, 0), tzinfo=w.zone).timestamp() - 30 * DAY
    return Scenario(
        "points_expiring",
        expects=(Expect(wes, "points-expiring", due, {"points": 120, "expire_at": expire_at}),),
        negatives=(NotSent(xena),),
    )


BUILDERS: dict[str, Callable[[World], Scenario]] = {
    "abandoned_cart": _abandoned_cart,
    "browse_abandonment": _browse_abandonment,
    "tier_upgrade": _tier_upgrade,
    "near_next_tier": _near_next_tier,
    "win_back": _win_back,
    "welcome": _welcome,
    "review_request": _review_request,
    "birthday": _birthday,
    "store_event": _store_event,
    "replenishment": _replenishment,
    "points_expiring": _points_expiring,
}


# What the dataflow wrote --------------------------------------------------------------


@dataclass
class Observed:
    scenarios: dict[str, Scenario]
    rules: RuleSet
    triggers: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    waited_s: float = 0.0
    dataflow: PulseProcess | None = None

    def triggers_of(self, rule_id: str, customer: str) -> list[dict[str, Any]]:
        return [
            t for t in self.triggers if t["rule_id"] == rule_id and t["customer_id"] == customer
        ]

    def decisions_of(self, rule_id: str, customer: str) -> list[dict[str, Any]]:
        return [
            d for d in self.decisions if d["rule_id"] == rule_id and d["customer_id"] == customer
        ]

    def missing(self) -> list[str]:
        """Expected triggers and decisions not seen yet."""
        out = []
        for scenario in self.scenarios.values():
            rule_id = scenario.rule_id
            for expect in scenario.expects:
                if not self.triggers_of(rule_id, expect.customer):
                    out.append(f"{rule_id} trigger for {expect.customer}")
            for neg in scenario.negatives:
                if neg.outcome and not any(
                    _matches(d, neg) for d in self.decisions_of(rule_id, neg.customer)
                ):
                    out.append(f"{rule_id} {neg.outcome} decision for {neg.customer}")
        return out

    def explain(self, customer: str, problem: str) -> str:
        """``problem`` with everything the dataflow decided and sent for ``customer``."""
        lines = [problem, f"--- decisions about {customer}:"]
        for d in sorted(self.decisions, key=lambda d: (d["at"], d["rule_id"])):
            if d["customer_id"] == customer:
                lines.append(
                    f"  {_rfc3339(d['at'])}  {d['rule_id']:<20} {d['outcome']:<10} "
                    f"{d.get('reason', '')} {d.get('channel', '')}"
                )
        lines.append(f"--- triggers for {customer}:")
        for t in self.triggers:
            if t["customer_id"] == customer:
                lines.append(f"  {orjson.dumps(t).decode()}")
        lines.append(
            f"--- read {len(self.triggers)} trigger(s), {len(self.decisions)} decision(s) "
            f"in {self.waited_s:.1f} s; still missing: {self.missing() or 'nothing'}"
        )
        if self.dataflow is not None and not self.dataflow.alive():
            lines.append(f"--- the dataflow died:\n{self.dataflow.log_text()[-3000:]}")
        return "\n".join(lines)


def _matches(decision: dict[str, Any], neg: NotSent) -> bool:
    return decision["outcome"] == neg.outcome and (
        not neg.reason or decision.get("reason", "") == neg.reason
    )


def _read_until_complete(settings: Settings, observed: Observed) -> None:
    """Read the triggers and decisions topics until nothing expected is missing
    (then ``GRACE_S`` more), the time is up or the dataflow died."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    consumer.subscribe([settings.triggers_topic, settings.decisions_topic])
    started = time.monotonic()
    complete_at: float | None = None
    try:
        while time.monotonic() - started < WAIT_FOR_ALL_S:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is not None:
                    continue
                record = orjson.loads(value_of(msg))
                if msg.topic() == settings.triggers_topic:
                    observed.triggers.append(record)
                else:
                    observed.decisions.append(record)
            if complete_at is None and not observed.missing():
                complete_at = time.monotonic()
            if complete_at is not None and time.monotonic() - complete_at >= GRACE_S:
                break
            if observed.dataflow is not None and not observed.dataflow.alive():
                break
    finally:
        consumer.close()
        observed.waited_s = time.monotonic() - started


# Fixtures: one isolated stack for the module ---------------------------------------------


@pytest.fixture(scope="module")
def module_rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped rules with waits of seconds (as the function-scoped ``rules_dir``)."""
    target = tmp_path_factory.mktemp("rules-e2e") / "rules"
    return copy_with_waits(load_settings(environ={}).rules_dir, target, SHORT_WAITS)


@pytest.fixture(scope="module")
def module_settings(
    live_services: Settings, tmp_path_factory: pytest.TempPathFactory, module_rules_dir: Path
) -> Iterator[Settings]:
    """Settings isolated for this module, as ``pulse_settings`` is for one test:
    unique topics, keys and groups, its own recovery dir; all removed afterwards."""
    with isolated_settings(live_services, tmp_path_factory.mktemp("recovery-e2e")) as isolated:
        yield load_settings(environ=isolated.as_environ(), rules_dir=str(module_rules_dir))


@pytest.fixture(scope="module")
def produced(module_settings: Settings) -> Observed:
    """Every rule's scenario, produced at once and in event-time order before the
    dataflow starts: each partition is then read in time order, without pauses."""
    loaded = load_rules(module_settings.rules_dir)
    assert loaded.rules is not None, loaded.problems
    rules = loaded.rules
    now = float(int(time.time()))
    world = World(
        script=Script(),
        rules=rules,
        now=now,
        t0=now - 300,
        zone=ZoneInfo(rules.policy.timezone),
    )
    scenarios = {rule_id: build(world) for rule_id, build in BUILDERS.items()}
    customers = [
        *(e.customer for s in scenarios.values() for e in s.expects),
        *(n.customer for s in scenarios.values() for n in s.negatives),
    ]
    assert len(customers) == len(set(customers)), "scenarios must not share customers"
    produce_events(module_settings, world.script.in_time_order())
    return Observed(scenarios, rules)


@pytest.fixture(scope="module")
def dataflow(
    module_settings: Settings, produced: Observed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PulseProcess]:
    """One `pulse run` for the module, started once the events are in Kafka."""
    proc = PulseProcess(module_settings, tmp_path_factory.mktemp("logs-e2e"), "dataflow", "run")
    try:
        yield proc
        assert proc.alive(), "the dataflow died during the tests:\n" + proc.log_text()[-3000:]
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def observed(module_settings: Settings, produced: Observed, dataflow: PulseProcess) -> Observed:
    """What the dataflow wrote about the scenarios, read once for the module."""
    produced.dataflow = dataflow
    _read_until_complete(module_settings, produced)
    return produced


# Tests --------------------------------------------------------------------------------


def test_every_shipped_rule_has_a_scenario() -> None:
    loaded = load_rules(load_settings(environ={}).rules_dir)
    assert loaded.rules is not None, loaded.problems
    assert sorted(r.id for r in loaded.rules.rules) == sorted(RULE_IDS) == sorted(BUILDERS)


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_rule_end_to_end(rule_id: str, observed: Observed) -> None:
    scenario = observed.scenarios[rule_id]
    rule = observed.rules.by_id[rule_id]
    for expect in scenario.expects:
        customer = expect.customer
        sent = observed.triggers_of(rule_id, customer)
        assert len(sent) == 1, observed.explain(
            customer, f"expected one {rule_id} trigger for {customer}, got {len(sent)}"
        )
        trigger = sent[0]
        why = observed.explain(customer, f"the {rule_id} trigger for {customer} is wrong")
        assert trigger["channel"] == expect.channel, why
        assert trigger["template"] == expect.template, why
        assert trigger["category"] == rule.rule.category, why
        assert trigger["recipient"] == {"email": _email(customer)}, why
        assert trigger["fired_at"] == expect.fired_at, (
            f"fired at {_rfc3339(trigger['fired_at'])}, expected {_rfc3339(expect.fired_at)}\n"
            + why
        )
        assert trigger["deadline"] == expect.fired_at + rule.deadline_s, why
        for key, value in expect.payload.items():
            assert trigger["payload"].get(key) == value, f"payload[{key!r}]\n{why}"
        if expect.origin_event_id:
            assert trigger["origin_event_id"] == expect.origin_event_id, why
            assert trigger["trigger_id"] == trigger_id(
                rule_id, customer, expect.origin_event_id, trigger["entry"]
            ), why
        fired = [d for d in observed.decisions_of(rule_id, customer) if d["outcome"] == "fired"]
        assert [d["trigger_id"] for d in fired] == [trigger["trigger_id"]], why
    for neg in scenario.negatives:
        customer = neg.customer
        assert not observed.triggers_of(rule_id, customer), observed.explain(
            customer, f"{customer} must get no {rule_id} message"
        )
        decisions = observed.decisions_of(rule_id, customer)
        if neg.outcome:
            assert any(_matches(d, neg) for d in decisions), observed.explain(
                customer, f"expected a {rule_id} decision {neg.outcome} {neg.reason} for {customer}"
            )
            assert not [d for d in decisions if d["outcome"] == "fired"], observed.explain(
                customer, f"{customer} has a fired {rule_id} decision"
            )
        else:
            assert decisions == [], observed.explain(
                customer, f"the {rule_id} rule must not consider {customer} at all"
            )
