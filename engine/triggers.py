"""Triggers: decisions to contact a customer, and the delayed rules that make them.

A trigger's id is derived from (rule, customer, originating event), so the same
decision replayed after a crash has the same id and the dispatcher can deliver
it exactly once.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec


class Trigger(msgspec.Struct, frozen=True, kw_only=True):
    trigger_id: str
    rule_id: str
    customer_id: str
    origin_event_id: str
    fired_at: float
    channel: str = "log"
    payload: dict[str, Any] = {}


def trigger_id(rule_id: str, customer_id: str, origin_event_id: str) -> str:
    digest = hashlib.blake2b(
        f"{rule_id}\x1f{customer_id}\x1f{origin_event_id}".encode(), digest_size=16
    )
    return digest.hexdigest()


class Timer(msgspec.Struct, frozen=True, array_like=True):
    """A pending delayed rule for one customer: due time and the event that armed it."""

    due: float
    origin_event_id: str


class DelayedRule(msgspec.Struct, frozen=True, kw_only=True):
    """Fire ``delay_s`` after the last ``start_on`` event unless a ``cancel_on`` comes.

    The foundation's abandoned-cart rule is one of these; YAML rules with CEL
    conditions generalise it.
    """

    rule_id: str
    start_on: frozenset[str]
    cancel_on: frozenset[str]
    delay_s: float
    channel: str = "log"
    require_cart: bool = False


def abandoned_cart(delay_s: float) -> DelayedRule:
    return DelayedRule(
        rule_id="abandoned_cart",
        start_on=frozenset({"add_to_cart"}),
        cancel_on=frozenset({"order_placed"}),
        delay_s=delay_s,
        require_cart=True,
    )
