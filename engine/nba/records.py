"""What flows into a next-best-action policy and what it emits, as values.

Inputs come from the customer's side of the flow, where the profile is
(``engine.nba.customer``): a ``Context`` when the customer's next action should
be looked at, a ``Signal`` when an event rewards a decision. The policy
answers with a ``Decision`` (logged, served) and, once its reward is known,
an ``Outcome`` (logged, learned from).

A decision's id is derived from the customer and the input that prompted it,
never from a clock or a random draw, so a replay makes the same ids and the
website's reward calls still find their decision.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

# Why a decision stopped waiting for rewards.
Settlement = Literal[
    "converted",  # it earned the largest reward there is: nothing more can come
    "explicit",  # an explicit reward call (POST /v1/decisions/{id}/reward)
    "expired",  # its window ended (reward 0 if nothing came)
    "superseded",  # its action stopped being eligible, or a real choice replaced a forced one
    "evicted",  # the policy's memory was full: the oldest settles early
]


class Context(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The customer as a decision sees them: what is eligible and the features."""

    customer_id: str
    at: float  # event time
    origin: str  # the id of the event that prompted it (unique per customer)
    eligible: tuple[str, ...]  # in actions.yaml order, the control always among them
    features: tuple[float, ...]  # in the order of engine.nba.features.FEATURE_NAMES
    profile_version: int = 0  # the profile's event count: which state it was read from


class Signal(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An event (or an explicit call) that may reward a decision."""

    customer_id: str
    at: float
    value: float  # 0..1, before the action's weight
    source: str  # the event type, or "explicit"
    decision_id: str = ""  # a given decision; else the customer's live one
    explicit: bool = False  # settles the decision at once


Input = Context | Signal


class Decision(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="type",
    tag="decision",
):
    """One choice for one customer: logged on the nba topic and served by the API.
    Encoded with ``"type": "decision"`` (the topic holds outcomes too)."""

    decision_id: str
    customer_id: str
    at: float  # event time of the decision
    expires_at: float  # rewards count until then; the API serves it until then
    action: str
    params: dict[str, Any] = {}  # the action's params from actions.yaml
    eligible: tuple[str, ...] = ()
    propensity: float = 1.0  # probability of this action given the eligible set and the model
    explored: bool = False  # chosen by the exploration draw, not by the model
    holdout: bool = False  # a hold-out customer: the control action, nothing learned
    forced: bool = False  # nothing but the control was eligible: no choice, nothing learned
    origin: str = ""  # the event that prompted it
    context_version: str = ""  # actions.yaml and the feature set (engine.nba.book)
    profile_version: int = 0  # the profile's event count when it was read
    features: dict[str, float] = {}


class Outcome(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="type",
    tag="outcome",
):
    """What a decision earned, once it can earn no more (``"type": "outcome"``)."""

    decision_id: str
    customer_id: str
    action: str
    decided_at: float
    settled_at: float
    reward: float  # after the action's weight
    reason: Settlement
    source: str = ""  # what earned the reward ("" for none)
    holdout: bool = False
    learned: bool = False  # the policy learned from it


Effect = Decision | Outcome


class Served(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the API serves of a customer's live decision: the website's part of a
    ``Decision`` (the whole record, features and all, is on the nba topic; in
    Redis, beside every profile, it would weigh half as much as the profile)."""

    decision_id: str
    action: str
    at: float
    expires_at: float
    params: dict[str, Any] = {}


def served(decision: Decision) -> Served:
    return Served(
        decision_id=decision.decision_id,
        action=decision.action,
        at=decision.at,
        expires_at=decision.expires_at,
        params=decision.params,
    )


def decision_id(customer_id: str, origin: str) -> str:
    """Unique while origins are unique per customer (event ids are: duplicates are dropped)."""
    digest = hashlib.blake2b(f"nba\x1f{customer_id}\x1f{origin}".encode(), digest_size=16)
    return digest.hexdigest()


def unit(key: str, purpose: str) -> float:
    """A number in [0, 1) fixed for a key and a purpose (not Python's salted hash)."""
    digest = hashlib.blake2b(f"{purpose}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64
