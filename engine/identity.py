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

An alias takes the same path: its previous id is the event's anonymous id, so
it links that id like an identify. Its link also says ``alias``, and then the
previous id may be a known customer's too: the link asks that customer's state
(``MergeRequest``) to hand its profile over and to become a stub that sends
its later events on. The dataflow's customer states cannot reach each other
within the flow, so the profile travels back through the control topic
(``CustomerMerged``) and the events through the events topic (``Forwarded``);
both are absorbed once however often they arrive.
"""

from __future__ import annotations

import math

import msgspec

from engine import events as ev
from engine.control import CustomerMerged
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
    """An anonymous id seen together with a customer id, at event time ``ts``;
    ``alias``: from an alias, whose previous id may also be a known customer's."""

    anonymous_id: str
    customer_id: str
    ts: float = 0.0
    alias: bool = False


class MergeRequest(msgspec.Struct, frozen=True):
    """To a customer id that an alias named as the previous id: hand your
    profile to ``into`` and send your later events there."""

    into: str
    ts: float


class ToCustomer(msgspec.Struct, frozen=True):
    """Input for a known customer's state: an event, a profile to merge (an
    anonymous one, a request to merge away, or one handed over by an aliased
    customer), an erasure."""

    customer_id: str
    event: ev.BaseEvent | None = None
    merge: CustomerState | MergeRequest | CustomerMerged | None = None
    erase_at: float | None = None


def link_of(event: ev.BaseEvent) -> Link | None:
    if event.anonymous_id is None or event.customer_id is None:
        return None
    return Link(event.anonymous_id, event.customer_id, event.ts, type(event) is ev.Alias)


def control_inputs(
    message: EraseCustomer | CustomerMerged,
) -> list[ToCustomer | EraseAnonymous]:
    """Where a control message for the states must go: an erasure to the
    customer and its anonymous ids, a handed-over profile to its new customer."""
    if isinstance(message, CustomerMerged):
        return [ToCustomer(message.customer_id, merge=message)]
    return erasure_inputs(message)


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
        out: list[ToCustomer | Effect] = []
        if item.alias and anonymous_id != item.customer_id:  # may be a known customer's too
            request = MergeRequest(item.customer_id, item_ts)
            out.append(ToCustomer(anonymous_id, merge=request))
        if merged is None:
            return anon, out
        out += [ToCustomer(item.customer_id, merge=merged), ProfileRemoved(merged.customer_id)]
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


def absorb(
    engine: Engine,
    state: CustomerState | None,
    merge: CustomerState | MergeRequest | CustomerMerged,
    customer_id: str,
) -> tuple[CustomerState, list[Effect | CustomerMerged]]:
    """A known customer's state takes in a profile or a request to merge away.

    - ``MergeRequest``: this id was aliased into another. Its profile leaves
      (``CustomerMerged`` for the control topic; the served profile and its
      segment memberships are removed) and the state becomes a stub that sends
      its later events on (Engine.apply). An id already aliased stays with the
      first: as for anonymous ids, the first link wins.
    - anything merged into a stub goes on to where the stub points.
    - ``CustomerMerged``: absorbed once per previous id, as an anonymous
      profile is (engine/merge.py), whatever replays deliver again.
    """
    if isinstance(merge, MergeRequest):
        return _merge_away(state, merge, customer_id)
    if state is not None and state.merged_into:
        return _pass_on(engine, state, merge, customer_id)
    if isinstance(merge, CustomerMerged):
        if state is not None and merge.previous_id in state.merged_ids:
            return state, []  # delivered again (a replay after a crash)
        state, effects = engine.absorb(state, merge.state, customer_id)
        if merge.previous_id not in state.merged_ids:
            state.merged_ids.append(merge.previous_id)
        return state, list(effects)
    absorbed, effects = engine.absorb(state, merge, customer_id)
    return absorbed, list(effects)


def _merge_away(
    state: CustomerState | None, request: MergeRequest, customer_id: str
) -> tuple[CustomerState, list[Effect | CustomerMerged]]:
    if (state is not None and state.merged_into) or request.into == customer_id:
        return state or CustomerState(customer_id=customer_id), []  # the first alias wins
    erased_at = state.erased_at if state is not None and state.erased_at else -math.inf
    stub = CustomerState(customer_id=customer_id, merged_into=request.into, erased_at=erased_at)
    if state is None or (state.events_total == 0 and not state.merged_ids):
        return stub, []  # nothing to hand over (yet: later events go on)
    out: list[Effect | CustomerMerged] = [
        CustomerMerged(
            customer_id=request.into, previous_id=customer_id, state=state, path=(customer_id,)
        ),
        ProfileRemoved(customer_id),
    ]
    if state.segments:
        out.append(SegmentsChanged(customer_id, (), tuple(state.segments)))
    return stub, out


def _pass_on(
    engine: Engine,
    stub: CustomerState,
    merge: CustomerState | CustomerMerged,
    customer_id: str,
) -> tuple[CustomerState, list[Effect | CustomerMerged]]:
    """A profile reached a stub: on to where it points, unless that closes a
    cycle of aliases (B aliased into A after A into B), which this id then
    ends by taking the profile and living again."""
    if isinstance(merge, CustomerMerged):
        previous, profile, path = merge.previous_id, merge.state, merge.path
    else:  # an anonymous profile linked to this id before it was aliased away
        previous, profile, path = merge.customer_id, merge, ()
    target = stub.merged_into
    if target in path or target == previous:
        erased_at = stub.erased_at if stub.erased_at > -math.inf else 0.0
        live = CustomerState(customer_id=customer_id, erased_at=erased_at)
        handed = CustomerMerged(
            customer_id=customer_id, previous_id=previous, state=profile, path=path
        )
        return absorb(engine, live, handed, customer_id)
    onward = CustomerMerged(
        customer_id=target, previous_id=previous, state=profile, path=(*path, customer_id)
    )
    return stub, [onward]
