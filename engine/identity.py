"""Identity resolution: anonymous visitors become known customers.

Every event that carries a customer id goes straight to that customer's state,
so one customer's own events keep their order whatever else happens. Events
with only an anonymous id pass a state keyed by that id: until the id is
linked to a customer, the anonymous visitor has a profile of its own there.
An event carrying both ids (an identify, typically) also sends a ``Link`` to
the anonymous id's state: on the first link, the anonymous profile travels to
the customer's key and is merged there (``engine.merge``), and from then on
anonymous-only events are re-addressed to the customer, so both ids land on
one profile. The first link wins: a later identify of the same anonymous id
with another customer moves only its own events (a shared device does not
merge two people).
"""

from __future__ import annotations

import msgspec

from engine import events as ev
from engine.customer import Effect, Engine, ProfileRemoved, SegmentsChanged
from engine.privacy import EraseAnonymous, EraseCustomer
from engine.profile import CustomerState


class AnonymousState(msgspec.Struct, kw_only=True, gc=False):
    """An anonymous id's own profile until linked (not tracked by the cyclic GC,
    as CustomerState)."""

    anonymous_id: str
    customer_id: str | None = None
    profile: CustomerState | None = None
    erased_at: float = 0.0  # events and links up to this time are ignored


_encoder = msgspec.msgpack.Encoder()
_anonymous_decoder = msgspec.msgpack.Decoder(AnonymousState)


def encode_anonymous(state: AnonymousState) -> bytes:
    """An anonymous id's state for a recovery snapshot (see engine.profile.encode_state)."""
    return _encoder.encode(state)


def decode_anonymous(raw: bytes) -> AnonymousState:
    return _anonymous_decoder.decode(raw)


class Link(msgspec.Struct, frozen=True):
    """An anonymous id seen together with a customer id, at event time ``ts``."""

    anonymous_id: str
    customer_id: str
    ts: float = 0.0


class ToCustomer(msgspec.Struct, frozen=True):
    """Input for a known customer's state: an event, a profile to merge, an erasure."""

    customer_id: str
    event: ev.BaseEvent | None = None
    merge: CustomerState | None = None
    erase_at: float | None = None


def link_of(event: ev.BaseEvent) -> Link | None:
    if event.anonymous_id is None or event.customer_id is None:
        return None
    return Link(event.anonymous_id, event.customer_id, event.ts)


def erasure_inputs(
    request: EraseCustomer,
) -> list[ToCustomer | EraseAnonymous]:
    """Where an erasure must go: the customer's state and each linked anonymous id's."""
    out: list[ToCustomer | EraseAnonymous] = [
        ToCustomer(request.customer_id, erase_at=request.requested_at)
    ]
    out += [EraseAnonymous(a, request.requested_at) for a in request.anonymous_ids]
    return out


def resolve(
    engine: Engine,
    anon: AnonymousState | None,
    item: ev.BaseEvent | Link | EraseAnonymous,
) -> tuple[AnonymousState, list[ToCustomer | Effect]]:
    """One step of an anonymous id's state: a link, an erasure or an anonymous event."""
    anonymous_id = item.anonymous_id
    assert anonymous_id is not None
    if anon is None:
        anon = AnonymousState(anonymous_id=anonymous_id)
    if isinstance(item, EraseAnonymous):
        erased: list[ToCustomer | Effect] = []
        if anon.profile is not None:
            erased.append(ProfileRemoved(anon.profile.customer_id))
            if anon.profile.segments:
                segments = tuple(anon.profile.segments)
                erased.append(SegmentsChanged(anon.profile.customer_id, (), segments))
        erased_at = max(anon.erased_at, item.requested_at)
        return AnonymousState(anonymous_id=anonymous_id, erased_at=erased_at), erased
    item_ts = item.ts
    if anon.erased_at and item_ts <= anon.erased_at:
        return anon, []  # history from before the erasure stays erased
    if isinstance(item, Link):
        if anon.customer_id is not None:
            return anon, []
        anon.customer_id = item.customer_id
        merged, anon.profile = anon.profile, None
        if merged is None:
            return anon, []
        out: list[ToCustomer | Effect] = [
            ToCustomer(item.customer_id, merge=merged),
            ProfileRemoved(merged.customer_id),
        ]
        if merged.segments:
            out.append(SegmentsChanged(merged.customer_id, (), tuple(merged.segments)))
        return anon, out
    assert item.customer_id is None, "events with a customer id go straight to the customer"
    if anon.customer_id is not None:
        known = msgspec.structs.replace(item, customer_id=anon.customer_id)
        return anon, [ToCustomer(anon.customer_id, known)]
    anon.profile, effects = engine.apply(anon.profile, item)
    return anon, list(effects)


def fire_due(engine: Engine, anon: AnonymousState, until: float) -> list[Effect]:
    return engine.fire_due(anon.profile, until) if anon.profile is not None else []


def next_due(anon: AnonymousState) -> float | None:
    return Engine.next_due(anon.profile) if anon.profile is not None else None
