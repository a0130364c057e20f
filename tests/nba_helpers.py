"""Action books and inputs for the next-best-action tests."""

from __future__ import annotations

from functools import cache

from engine.nba.book import ActionBook, load_actions
from engine.nba.features import FEATURE_NAMES
from engine.nba.records import Context, Signal

ACTIONS = ("discount", "bundle", "loyalty_invite", "nothing")
T0 = 1_800_000_000.0


@cache
def book(
    exploration: float = 0.1,
    holdout: float = 0.0,
    window: str = "1h",
    max_pending: int = 1000,
    rewards: str = "",
) -> ActionBook:
    """A book whose policy tests hand eligible sets in directly (no conditions)."""
    text = f"""
policy:
  exploration: {exploration}
  holdout: {holdout}
  window: {window}
  max_pending: {max_pending}
rewards:
  - event: custom
    when: event.name == "offer_clicked"
    value: 0.2
  - event: add_to_cart
    value: 0.5
  - event: order_placed
    value: 1.0
{rewards}
actions:
  - id: discount
    weight: 0.5
  - id: bundle
  - id: loyalty_invite
  - id: nothing
"""
    loaded = load_actions("actions.yaml", text)
    assert loaded.book is not None, loaded.problems
    return loaded.book


def context(
    customer: str,
    at: float,
    origin: str,
    eligible: tuple[str, ...] = ACTIONS,
    features: tuple[float, ...] | None = None,
) -> Context:
    x = features if features is not None else (1.0,) + (0.0,) * (len(FEATURE_NAMES) - 1)
    return Context(customer_id=customer, at=at, origin=origin, eligible=eligible, features=x)


def signal(customer: str, at: float, value: float, decision_id: str = "") -> Signal:
    return Signal(
        customer_id=customer, at=at, value=value, source="order_placed", decision_id=decision_id
    )
