"""The demo's last act: one new shopper browses, fills a cart and answers the
offer, and the demo asks the API after each step, so the recommendations, the
next-best-action and the scores are seen changing with what the shopper did.

Every step goes through the public API (``POST /v1/events``, the read routes
and ``POST /v1/decisions/{id}/reward``), as a website would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from pulse.sample_stream import catalog

Request = Callable[[str, str, bytes | None], tuple[int, Any]]


def show_live_shopper(request: Request, console: Console, *, timeout_s: float = 30.0) -> bool:
    """Walk one shopper through a visit; True when every change was seen."""
    customer = f"live-{uuid.uuid4().hex[:6]}"
    products = catalog()
    console.rule(f"one more shopper, {customer}, step by step (each answer read from the API)")

    before = _recommendations(request, customer)
    _show_recs(console, "a stranger: recommendations (nothing known yet)", before)
    action = _next_action(request, customer)
    console.print(f"next-best-action: [bold]{action.get('action')}[/] (no decision yet)")

    # Browse one category the stranger's list does not lead with.
    shown = {item.get("category") for item in before.get("items", [])[:3]}
    category = next((p.category for p in products if p.category not in shown), products[0].category)
    browsed = [p for p in products if p.category == category][:4]
    now = time.time()
    _post_events(
        request,
        [
            {
                "type": "product_view",
                "event_id": f"{customer}-view-{n}",
                "customer_id": customer,
                "sku": p.sku,
                "name": p.name,
                "category": p.category,
                "price": p.price,
                "timestamp": _iso(now + n),
            }
            for n, p in enumerate(browsed)
        ],
    )
    skus = ", ".join(p.sku for p in browsed)
    console.print(f"{customer} views {len(browsed)} {category} ({skus})")
    after = _until(
        lambda: _recommendations(request, customer),
        lambda recs: (
            recs.get("strategy") == "personalised"
            and _share(recs, category) > _share(before, category)
        ),
        timeout_s,
    )
    if after is None:
        console.print(f"[red]the recommendations did not change within {timeout_s:.0f} s")
        return False
    _show_recs(console, f"after the views: {category} first", after)

    # A cart worth a discount (actions.yaml: a cart of 20 or more, under 3 orders).
    cart = max(browsed, key=lambda p: p.price)
    quantity = max(1, int(25.0 // cart.price) + 1)
    _post_events(
        request,
        [
            {
                "type": "add_to_cart",
                "event_id": f"{customer}-cart-1",
                "customer_id": customer,
                "sku": cart.sku,
                "name": cart.name,
                "category": cart.category,
                "price": cart.price,
                "quantity": quantity,
                "timestamp": _iso(time.time()),
            }
        ],
    )
    console.print(
        f"{customer} adds {quantity} x {cart.sku} to the cart ({quantity * cart.price:.2f})"
    )
    decided = _until(
        lambda: _next_action(request, customer),
        lambda a: a.get("decision_id") is not None,
        timeout_s,
    )
    if decided is None:
        console.print(f"[red]no next-best-action decision within {timeout_s:.0f} s")
        return False
    params = ", ".join(f"{k}={v}" for k, v in (decided.get("params") or {}).items())
    console.print(
        f"next-best-action: [bold]{decided['action']}[/]{f' ({params})' if params else ''}, "
        f"decision {decided['decision_id']} (the contextual bandit chose among the eligible)"
    )
    status, reward = request(
        "POST", f"/v1/decisions/{decided['decision_id']}/reward", orjson.dumps({"value": 1.0})
    )
    console.print(
        f"the website reports the offer clicked: POST /v1/decisions/.../reward -> {status} "
        f"{(reward or {}).get('status', reward)}; the policy learns it (settled on the nba topic)"
    )
    status, profile = request("GET", f"/v1/customers/{customer}/profile", None)
    scores = (profile or {}).get("scores") if status == 200 else None
    if scores:
        console.print(
            f"scores: purchase within {scores['propensity_days']:.0f} days "
            f"{scores['purchase_propensity']:.2f}, churn risk {scores['churn_risk']:.2f}, "
            f"predicted value {scores['predicted_clv']:.2f} "
            f"(models trained on {scores['examples']} labelled examples so far)"
        )
    return True


def _recommendations(request: Request, customer: str) -> dict[str, Any]:
    status, body = request("GET", f"/v1/customers/{customer}/recommendations?k=5", None)
    return body if status == 200 and isinstance(body, dict) else {}


def _next_action(request: Request, customer: str) -> dict[str, Any]:
    status, body = request("GET", f"/v1/customers/{customer}/next-action", None)
    return body if status == 200 and isinstance(body, dict) else {}


def _post_events(request: Request, events: list[dict[str, Any]]) -> None:
    for event in events:
        status, body = request("POST", "/v1/events", orjson.dumps(event))
        if status != 202:
            raise RuntimeError(f"collector refused an event ({status}): {body}")


def _until(
    read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = read()
        if done(value):
            return value
        time.sleep(0.2)
    return None


def _share(recs: dict[str, Any], category: str) -> int:
    return sum(1 for item in recs.get("items", []) if item.get("category") == category)


def _show_recs(console: Console, title: str, recs: dict[str, Any]) -> None:
    table = Table(title=f"{title} [{recs.get('strategy', '?')}]")
    for column in ("sku", "category", "score", "reason"):
        table.add_column(column)
    for item in recs.get("items", []):
        table.add_row(
            item["sku"], item.get("category") or "", f"{item['score']:.3f}", item["reason"]
        )
    console.print(table)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))
