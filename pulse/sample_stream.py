"""A generator of realistic shopper traffic for the demo, tests and benchmarks.

Each simulated customer has a few sessions: landing page views, product views
biased to one or two favourite categories, searches, carts that are either
checked out or abandoned, identify calls, consent changes and now and then a
support ticket. Sessions of many customers interleave as on a real site.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

CATEGORIES = ("mugs", "candles", "kitchen", "garden", "toys", "stationery", "lighting", "bags")
# Some near the stores of the shipped store_event rule, most not.
_POSTCODES = ("75001", "75011", "69002", "13001", "10115", "80331", "EC1A 1BB", "28013")
_ADJECTIVES = ("vintage", "retro", "pastel", "woodland", "spotty", "regency", "botanical", "party")


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    category: str
    price: float


def catalog(seed: int = 7, per_category: int = 12) -> list[Product]:
    rng = random.Random(seed)
    products = []
    for c_index, category in enumerate(CATEGORIES):
        for i in range(per_category):
            adjective = _ADJECTIVES[(i + c_index) % len(_ADJECTIVES)]
            products.append(
                Product(
                    sku=f"SKU-{c_index:02d}{i:03d}",
                    name=f"{adjective} {category.rstrip('s')} {i + 1}".title(),
                    category=category,
                    price=round(rng.choice((1.25, 2.55, 3.75, 4.95, 8.5, 12.75, 19.95)), 2),
                )
            )
    return products


def shopper_events(
    customers: int,
    seed: int = 42,
    run_id: str | None = None,
    start: datetime | None = None,
    spacing_s: float = 0.05,
    first_customer: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yield events (Pulse JSON) for ``customers`` shoppers.

    Event ids are unique per ``run_id`` so a second demo run is new traffic,
    while customer ids are stable so profiles grow across runs. Without
    ``start`` events carry no timestamp (the receive time is used, as for live
    traffic); with it, event ``i`` is stamped ``start + i * spacing_s``, which
    makes a stream exactly reproducible for tests and benchmarks. Customers are
    numbered from ``first_customer``.
    """
    rng = random.Random(seed)
    run = run_id or uuid.uuid4().hex[:8]
    products = catalog()
    by_category: dict[str, list[Product]] = {}
    for p in products:
        by_category.setdefault(p.category, []).append(p)

    sessions: list[Iterator[dict[str, Any]]] = []
    for n in range(first_customer, first_customer + customers):
        customer = f"c-{n:05d}"
        favourites = rng.sample(CATEGORIES, k=rng.choice((1, 2)))
        for s in range(rng.choice((1, 1, 2, 3))):
            sessions.append(_session(rng, run, customer, s, favourites, products, by_category))
    counter = 0
    # Interleave: repeatedly take the next event of a random live session.
    while sessions:
        i = rng.randrange(len(sessions))
        try:
            event = next(sessions[i])
        except StopIteration:
            sessions[i] = sessions[-1]
            sessions.pop()
            continue
        counter += 1
        event["event_id"] = f"{run}-{counter:07d}"
        if start is not None:
            event["timestamp"] = (start + timedelta(seconds=counter * spacing_s)).isoformat()
        yield event


def _session(
    rng: random.Random,
    run: str,
    customer: str,
    index: int,
    favourites: list[str],
    products: list[Product],
    by_category: dict[str, list[Product]],
) -> Iterator[dict[str, Any]]:
    anon = f"anon-{run}-{customer}-{index}"
    base = {"customer_id": customer, "channel": rng.choice(("web", "web", "app"))}
    yield {**base, "type": "page_view", "url": "https://shop.example/", "title": "Home"}
    if index == 0 and rng.random() < 0.8:
        yield {
            **base,
            "type": "identify",
            "anonymous_id": anon,
            "traits": {
                "email": f"{customer}@example.com",
                "first_name": customer.title(),
                "timezone": rng.choice(("Europe/Paris", "Europe/Berlin", "Europe/Madrid")),
                "postcode": rng.choice(_POSTCODES),
                "birthday": _birthday(rng),
            },
        }
        yield {
            **base,
            "type": "consent_changed",
            "consent_channel": "email",
            "granted": rng.random() < 0.85,
        }
    if rng.random() < 0.3:
        yield {**base, "type": "search", "query": rng.choice(favourites), "results": 12}
    viewed: list[Product] = []
    for _ in range(rng.randint(1, 6)):
        pool = by_category[rng.choice(favourites)] if rng.random() < 0.8 else products
        product = rng.choice(pool)
        viewed.append(product)
        yield {**base, "type": "product_view", **_item(product)}
    if rng.random() < 0.45:
        cart = rng.sample(viewed, k=min(len(viewed), rng.randint(1, 3)))
        for product in cart:
            yield {
                **base,
                "type": "add_to_cart",
                **_item(product),
                "quantity": rng.choice((1, 1, 2, 6)),
            }
        if rng.random() < 0.5:
            yield {**base, "type": "checkout_started"}
            total = round(sum(p.price for p in cart), 2)
            yield {
                **base,
                "type": "order_placed",
                "order_id": f"o-{run}-{customer}-{index}",
                "total": total,
                "currency": "GBP",
                "items": [{**_item(p), "quantity": 1} for p in cart],
            }
    if rng.random() < 0.05:
        ticket = f"t-{run}-{customer}-{index}"
        yield {
            **base,
            "type": "support_ticket_opened",
            "ticket_id": ticket,
            "subject": "Where is my order?",
            "channel": "call_center",
        }
        if rng.random() < 0.6:
            yield {
                **base,
                "type": "support_ticket_closed",
                "ticket_id": ticket,
                "channel": "call_center",
            }


def _birthday(rng: random.Random) -> str:
    return f"19{rng.randint(60, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _item(product: Product) -> dict[str, Any]:
    return {
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "price": product.price,
    }
