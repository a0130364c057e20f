"""What rules produce: decisions (every outcome, for the record) and triggers (sends).

A trigger's id is derived from (rule, customer, originating event, entry
number), so the same decision replayed after a crash has the same id and the
dispatcher can deliver it exactly once.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

Outcome = Literal[
    "entered",  # the rule started waiting
    "fired",  # a message goes out
    "suppressed",  # a guard stopped it (reason = the guard)
    "held_out",  # in the rule's hold-out group: recorded, not messaged
    "deferred",  # quiet hours: decided again at ``until``
    "cancelled",  # a cancel_on event ended the wait (reason = its type)
    "exited",  # its conditions did not hold when due (reason says which)
    "converted",  # the rule's goal happened (reason = treated or holdout)
    "error",  # a trigger, cancel, goal or wait expression failed; nothing else changed
]


class Trigger(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the dispatcher needs to deliver one message."""

    trigger_id: str
    rule_id: str
    customer_id: str
    origin_event_id: str
    entry: int
    fired_at: float  # event time of the decision
    channel: str
    template: str
    category: str
    priority: int
    deadline: float  # not worth delivering after this (epoch seconds)
    payload: dict[str, Any] = {}
    recipient: dict[str, str] = {}  # email / phone / push_token from the profile
    version: str = ""  # the rule-set version that decided it


class TriggerFired(msgspec.Struct, frozen=True):
    trigger: Trigger


class Decision(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One rule decision about one customer, whatever its outcome."""

    rule_id: str
    customer_id: str
    outcome: Outcome
    at: float  # event time
    reason: str = ""
    trigger_id: str = ""
    origin_event_id: str = ""
    entry: int = 0
    channel: str = ""
    category: str = ""
    until: float = 0.0  # entered / deferred: when it is due
    version: str = ""


def trigger_id(rule_id: str, customer_id: str, origin_event_id: str, entry: int = 0) -> str:
    digest = hashlib.blake2b(
        f"{rule_id}\x1f{customer_id}\x1f{origin_event_id}\x1f{entry}".encode(), digest_size=16
    )
    return digest.hexdigest()
