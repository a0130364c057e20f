"""Identity resolution: anonymous visitors become known customers.

Events that carry an anonymous id pass through a state keyed by that id first.
Until an identify (any event carrying both ids) links it to a customer id, the
anonymous visitor has a profile of its own here. On the link, that profile
travels with the linking event to the customer's key and is merged there
(``engine.merge``); from then on events under the anonymous id are re-addressed
to the customer, so both ids land on one profile. The first link of an
anonymous id wins: a later identify to another customer moves only its own
events (a shared device does not merge two people).
"""

from __future__ import annotations

import msgspec

from engine import events as ev
from engine.customer import Effect, Engine, ProfileRemoved, SegmentsChanged
from engine.profile import CustomerState


class AnonymousState(msgspec.Struct, kw_only=True):
    anonymous_id: str
    customer_id: str | None = None
    profile: CustomerState | None = None


class ToCustomer(msgspec.Struct, frozen=True):
    """An event bound for a known customer's state, maybe with a profile to merge."""

    customer_id: str
    event: ev.BaseEvent
    merge: CustomerState | None = None


def resolve(
    engine: Engine, anon: AnonymousState | None, event: ev.BaseEvent, now: float
) -> tuple[AnonymousState, list[ToCustomer | Effect]]:
    assert event.anonymous_id is not None
    if anon is None:
        anon = AnonymousState(anonymous_id=event.anonymous_id)
    if event.customer_id is not None:
        if anon.customer_id is not None:
            return anon, [ToCustomer(event.customer_id, event)]
        anon.customer_id = event.customer_id
        merged, anon.profile = anon.profile, None
        out: list[ToCustomer | Effect] = [ToCustomer(event.customer_id, event, merged)]
        if merged is not None:
            out.append(ProfileRemoved(merged.customer_id))
            if merged.segments:
                out.append(SegmentsChanged(merged.customer_id, (), tuple(merged.segments)))
        return anon, out
    if anon.customer_id is not None:
        known = msgspec.structs.replace(event, customer_id=anon.customer_id)
        return anon, [ToCustomer(anon.customer_id, known)]
    anon.profile, effects = engine.apply(anon.profile, event, now)
    return anon, list(effects)


def fire_due(engine: Engine, anon: AnonymousState, now: float) -> list[Effect]:
    return engine.fire_due(anon.profile, now) if anon.profile is not None else []


def next_due(anon: AnonymousState) -> float | None:
    return Engine.next_due(anon.profile) if anon.profile is not None else None
