"""Synthetic shoppers for the next-best-action replay: who they are, what they
do, and how they answer an offer. Entirely made up; nothing here is fitted
to real data.

Each shopper has hidden traits, drawn once:

- a budget (typical item price, log-normal around 25);
- price-sensitive (70 % of those with a budget under 25, 20 % of the others);
- a bundler (30 %): views many products per visit, takes bundles;
- loyal (30 %): visits about twice as often and identifies with an e-mail more
  often (90 % against 40 %), and answers a loyalty invitation.

Visits arrive as a Poisson process (0.35 a day for loyal shoppers, 0.15 for
the others) over the period. A visit is a page view, an identify on the first
visit for those who identify, 1 to 4 product views (4 to 9 for bundlers) 40 s
apart, and an add to cart with probability 0.35 (0.45 for bundlers); then the
website shows the customer's live decision.

The answer to what is shown depends on the traits and on the profile (a cart,
orders before), through the same three draws for every policy:

| shown | order (within 25 min) beyond the base | click | extra add to cart |
|---|---|---|---|
| discount | +0.16 price-sensitive with a cart, else +0.01 | 0.25 (lift >= 0.05), 0.04 | lift / 2 |
| free_shipping | +0.06, and +0.04 if price-sensitive | as above | lift / 2 |
| bundle | +0.10 for a bundler, else -0.02 | as above | lift / 2, +0.2 for a bundler |
| loyalty_invite | +0.10 for a loyal shopper | as above | lift / 2 |
| nothing | 0 | none | none |

The base rate of an order is 0.02, +0.10 with a cart, +0.03 once the shopper
has ordered before. With the shipped rewards (click 0.2, add to cart 0.5,
order 1.0) and weights (discount 0.7, free shipping 0.9), no single action is
best for everyone: a discount pays for price-sensitive carts and loses margin
on the rest, a bundle pays for bundlers only. The features the policy sees
(engine/nba/features.py) carry the traits only partly: cart value follows the
budget, browsing follows the bundler trait, orders and e-mail follow loyalty.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine import events as ev

DAY = 86400.0
CATEGORIES = ("shoes", "bags", "tops", "home", "beauty")
CLICK = "offer_clicked"


@dataclass(frozen=True)
class Shopper:
    id: str
    budget: float
    price_sensitive: bool
    bundler: bool
    loyal: bool
    identifies: bool
    visits: tuple[float, ...]  # start times, epoch seconds


@dataclass(frozen=True)
class Visit:
    shopper: Shopper
    number: int  # 0 for the first visit
    events: tuple[ev.BaseEvent, ...]
    ends: float  # when the website shows the live decision


def shoppers(n: int, days: float, start: float, seed: int) -> list[Shopper]:
    rng = random.Random(f"shoppers:{seed}")
    out = []
    for i in range(n):
        budget = math.exp(rng.gauss(math.log(25.0), 0.6))
        loyal = rng.random() < 0.3
        rate = 0.35 if loyal else 0.15
        first = start + rng.random() * days * DAY * 0.5
        visits = [first]
        while True:
            nxt = visits[-1] + rng.expovariate(rate) * DAY
            if nxt >= start + days * DAY:
                break
            visits.append(nxt)
        out.append(
            Shopper(
                id=f"s{i:05d}",
                budget=budget,
                price_sensitive=rng.random() < (0.7 if budget < 25.0 else 0.2),
                bundler=rng.random() < 0.3,
                loyal=loyal,
                identifies=rng.random() < (0.9 if loyal else 0.4),
                visits=tuple(visits),
            )
        )
    return out


def visit(shopper: Shopper, number: int, seed: int) -> Visit:
    """The same events for every policy: drawn from the shopper and the visit alone."""
    rng = random.Random(f"visit:{seed}:{shopper.id}:{number}")
    at = shopper.visits[number]
    events: list[ev.BaseEvent] = []

    def add(kind: type[ev.BaseEvent], **fields: Any) -> None:
        stamp = _time(at + 40.0 * len(events))
        events.append(
            kind(
                event_id=f"{shopper.id}-{number}-{len(events)}",
                customer_id=shopper.id,
                timestamp=stamp,
                **fields,
            )
        )

    add(ev.PageView, url="/")
    if number == 0 and shopper.identifies:
        add(ev.Identify, traits=ev.Traits(email=f"{shopper.id}@example.com"))
    views = rng.randint(4, 9) if shopper.bundler else rng.randint(1, 4)
    items = [_item(rng, shopper) for _ in range(views)]
    for sku, category, price in items:
        add(ev.ProductView, sku=sku, category=category, price=price)
    if rng.random() < (0.45 if shopper.bundler else 0.35):
        sku, category, price = rng.choice(items)
        add(ev.AddToCart, sku=sku, category=category, price=price)
    return Visit(shopper, number, tuple(events), at + 40.0 * len(events))


def _item(rng: random.Random, shopper: Shopper) -> tuple[str, str, float]:
    category = rng.choice(CATEGORIES)
    price = round(shopper.budget * rng.uniform(0.6, 1.6), 2)
    return f"{category}-{rng.randrange(40)}", category, price


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True)
class Response:
    """Chances of each answer to one shown action."""

    click: float
    cart: float
    order: float


def response(shopper: Shopper, action: str, cart_value: float, ordered: bool) -> Response:
    base = 0.02 + (0.10 if cart_value > 0 else 0.0) + (0.03 if ordered else 0.0)
    lift = 0.0
    cart_extra = 0.0
    if action == "discount":
        lift = 0.16 if shopper.price_sensitive and cart_value > 0 else 0.01
    elif action == "free_shipping":
        lift = 0.06 + (0.04 if shopper.price_sensitive else 0.0)
    elif action == "bundle":
        lift = 0.10 if shopper.bundler else -0.02
        cart_extra = 0.2 if shopper.bundler else 0.0
    elif action == "loyalty_invite":
        lift = 0.10 if shopper.loyal else 0.0
    if action == "nothing":
        return Response(0.0, 0.0, base)
    click = 0.25 if lift >= 0.05 else 0.04
    return Response(click, max(0.0, lift) / 2 + cart_extra, max(0.0, base + lift))


def expected_reward(r: Response, weight: float) -> float:
    """The reward the engine would credit, on average: the largest of order (1),
    add to cart (0.5) and click (0.2), times the action's weight."""
    p_order = r.order
    p_cart = (1 - p_order) * r.cart
    p_click = (1 - p_order) * (1 - r.cart) * r.click
    return weight * (p_order + 0.5 * p_cart + 0.2 * p_click)


def answers(
    shopper: Shopper,
    visit_number: int,
    seed: int,
    decision_id: str,
    r: Response,
    at: float,
    cart: list[tuple[str, float]],
) -> list[ev.BaseEvent]:
    """The shopper's answer: three draws that are the same whatever was shown,
    so policies meet the same luck."""
    rng = random.Random(f"answer:{seed}:{shopper.id}:{visit_number}")
    u_click, u_cart, u_order = rng.random(), rng.random(), rng.random()
    out: list[ev.BaseEvent] = []
    prefix = f"{shopper.id}-{visit_number}-r"
    if u_click < r.click:
        out.append(
            ev.Custom(
                event_id=f"{prefix}click",
                customer_id=shopper.id,
                timestamp=_time(at + 30.0),
                name=CLICK,
                properties={"decision_id": decision_id},
            )
        )
    if u_cart < r.cart:
        price = round(shopper.budget, 2)
        cart = [*cart, (f"extra-{shopper.id}", price)]
        out.append(
            ev.AddToCart(
                event_id=f"{prefix}cart",
                customer_id=shopper.id,
                timestamp=_time(at + 180.0),
                sku=f"extra-{shopper.id}",
                price=price,
            )
        )
    if u_order < r.order:
        lines = cart or [(f"direct-{shopper.id}", round(shopper.budget, 2))]
        out.append(
            ev.OrderPlaced(
                event_id=f"{prefix}order",
                customer_id=shopper.id,
                timestamp=_time(at + 1500.0),
                order_id=f"{prefix}order",
                total=round(sum(p for _s, p in lines), 2),
                items=tuple(ev.LineItem(sku=s, price=p) for s, p in lines),
            )
        )
    return out
