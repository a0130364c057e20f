"""Next-best-action end to end: dataflow and API as separate processes.

A shopper acts and the next action follows (a forced `nothing` while only the
control is eligible, a real choice once the cart gives one, each with its
decision id); the website rewards the decision and its outcome appears on the
<prefix>.nba topic, settled explicitly; a retried reward is a duplicate; a
stranger gets `nothing`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from pulse.rules_files import load_action_book
from pulse.settings import Settings
from tests.e2e.conftest import get, request
from tests.helpers import consume, produce_events, value_of, wait_for

pytestmark = pytest.mark.e2e


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


def _next(settings: Settings, customer: str) -> dict[str, Any]:
    status, body = get(settings, f"/v1/customers/{customer}/next-action")
    assert status == 200, body
    result: dict[str, Any] = body
    return result


def _nba_records(settings: Settings, expected: int) -> list[dict[str, Any]]:
    return [orjson.loads(value_of(m)) for m in consume(settings, settings.nba_topic, expected, 10)]


def test_a_shopper_gets_a_decision_rewards_it_and_the_outcome_is_logged(stack: Settings) -> None:
    settings = stack
    loaded = load_action_book(settings.rules_dir)
    assert loaded is not None and loaded.book is not None
    actions = {a.id for a in loaded.book.actions}
    now = time.time()

    # One product view: only the control is eligible, a forced decision.
    view = {
        "type": "product_view",
        "event_id": "nia-v1",
        "customer_id": "nia",
        "sku": "MUG-1",
        "category": "mugs",
        "price": 30.0,
        "timestamp": _iso(now),
    }
    produce_events(settings, [view])
    first = wait_for(
        lambda: (body := _next(settings, "nia"))["decision_id"] and body, 30, "a first decision"
    )
    assert first["action"] == "nothing" and first["expires_at"] > time.time()

    # A cart worth a discount: a choice now, which replaces the forced decision.
    cart = {
        "type": "add_to_cart",
        "event_id": "nia-c1",
        "customer_id": "nia",
        "sku": "MUG-1",
        "category": "mugs",
        "price": 30.0,
        "quantity": 1,
        "timestamp": _iso(now + 1),
    }
    produce_events(settings, [cart])
    second = wait_for(
        lambda: (body := _next(settings, "nia"))["decision_id"] != first["decision_id"] and body,
        30,
        "a decision with a choice",
    )
    assert second["decision_id"] and second["action"] in actions
    decision_id = second["decision_id"]

    # The website rewards it (the write key may); retrying is harmless.
    status, accepted = request(
        settings, "POST", f"/v1/decisions/{decision_id}/reward", {"value": 1.0}
    )
    assert status == 202, accepted
    assert accepted["event_id"] == f"decision_reward:{decision_id}"
    assert request(settings, "POST", f"/v1/decisions/{decision_id}/reward", {})[0] == 202

    def settled() -> list[dict[str, Any]]:
        return [
            r
            for r in _nba_records(settings, 4)
            if r["type"] == "outcome" and r["decision_id"] == decision_id
        ]

    [outcome] = wait_for(settled, 40, "the rewarded decision's outcome on the nba topic")
    assert outcome["reason"] == "explicit" and outcome["source"] == "explicit"
    weight = loaded.book.by_id[second["action"]].weight
    assert outcome["reward"] == pytest.approx(weight)
    records = _nba_records(settings, 4)
    decisions = [r for r in records if r["type"] == "decision"]
    assert [d["decision_id"] for d in decisions] == [first["decision_id"], decision_id]
    assert decisions[0]["forced"] and "discount" in decisions[1]["eligible"]
    superseded = [r for r in records if r.get("reason") == "superseded"]
    assert [r["decision_id"] for r in superseded] == [first["decision_id"]]
    # The retried reward was a duplicate: one outcome, no second one.
    time.sleep(3)
    assert len(settled()) == 1

    # A stranger: the control action, no decision, never an error.
    assert _next(settings, "nobody-at-all") == {
        "customer_id": "nobody-at-all",
        "action": "nothing",
        "decision_id": None,
        "params": {},
        "decided_at": None,
        "expires_at": None,
    }
    status, problem = request(settings, "POST", "/v1/decisions/no-such-decision/reward", {})
    assert status == 404 and "decision_id" in problem["detail"]
