"""The customer's side of next-best-action: what one event means for the policy.

Runs where the profile is (the dataflow's per-customer step), after the event
has updated it, and keeps no state of its own: it evaluates the eligibility
conditions and the features for a ``Context``, and the reward conditions for
a ``Signal``. The policy, which holds the model and the pending decisions,
needs nothing else from the profile.

An explicit reward (``POST /v1/decisions/{id}/reward``) arrives as a custom
event named ``decision_reward`` carrying ``decision_id`` and ``value`` in its
properties; any reward event whose properties carry a ``decision_id`` rewards
that decision rather than the customer's live one (a click on the offer the
website showed).
"""

from __future__ import annotations

from typing import Any

from engine import events as ev
from engine.nba.book import ActionBook
from engine.nba.eligibility import holds
from engine.nba.features import features
from engine.nba.records import Context, Input, Signal
from engine.rules.context import Scope

EXPLICIT_REWARD = "decision_reward"


def inputs(book: ActionBook, scope: Scope, event: ev.BaseEvent) -> list[Input]:
    """What the policy must hear of this event: its reward first (it belongs to
    the decision the customer saw), then the context it leaves."""
    kind = ev.event_type(event)
    out: list[Input] = []
    if kind in book.rewards or kind == "custom":
        signal = reward_signal(book, scope, event, kind)
        if signal is not None:
            out.append(signal)
    if kind in book.decide_on:
        out.append(context(book, scope, event.event_id))
    return out


def context(book: ActionBook, scope: Scope, origin: str) -> Context:
    """The customer now: the eligible actions (the control always) and the features."""
    state = scope.state
    return Context(
        customer_id=state.customer_id,
        at=scope.now,
        origin=origin,
        eligible=book.eligibility.of(scope),
        features=features(scope),
        profile_version=state.events_total,
    )


def reward_signal(book: ActionBook, scope: Scope, event: ev.BaseEvent, kind: str) -> Signal | None:
    properties: dict[str, Any] = event.properties if isinstance(event, ev.Custom) else {}
    target = properties.get("decision_id")
    decision = target if isinstance(target, str) else ""
    if isinstance(event, ev.Custom) and event.name == EXPLICIT_REWARD:
        if not decision:
            return None
        return Signal(
            customer_id=scope.state.customer_id,
            at=scope.now,
            value=_explicit_value(properties.get("value", 1.0)),
            source="explicit",
            decision_id=decision,
            explicit=True,
        )
    value = 0.0
    for reward in book.rewards.get(kind, ()):
        if reward.value > value and holds(reward.when, scope):
            value = reward.value
    if value <= 0.0:
        return None
    return Signal(
        customer_id=scope.state.customer_id,
        at=scope.now,
        value=value,
        source=kind,
        decision_id=decision,
    )


def _explicit_value(raw: object) -> float:
    """A value the website sent, held to 0..1 (anything else counts as 0)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return 0.0
    return min(1.0, max(0.0, float(raw)))
