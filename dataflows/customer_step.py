"""Bytewax stateful logic around the pure engine: one instance per key.

Each key gets its share of a batch in one call (``stateful_batch``): the
engine applies the events one by one, in order, and the key answers with one
``StepOut`` whose serving view is encoded once, from the last state.

Pending rule actions are part of the state, so after a crash they come back
with the snapshot. They fire from Bytewax's own notification mechanism when
the process's stream clock (dataflows/stream_clock.py) has passed their due
time; the engine decides them as of that due time. Snapshots are the state
encoded as MessagePack bytes, which Bytewax then stores as they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, TypeVar

from bytewax.operators import StatefulBatchLogic

from dataflows.nba_inputs import CustomerSide, applied
from dataflows.stream_clock import StreamClock
from engine import identity
from engine.customer import Effect, Engine, ProfileChanged, ProfileRemoved
from engine.decode import decode_event
from engine.email_index import digest
from engine.events import BaseEvent
from engine.identity import Link, ToCustomer, decode_anonymous, encode_anonymous
from engine.nba.records import Input
from engine.privacy import EraseAnonymous
from engine.profile import (
    STATE_VERSION,
    CustomerState,
    decode_state,
    encode_state,
    encode_view,
    profile_view,
)
from engine.recs.shopper import encode_items
from engine.scores.features import features
from engine.scores.serving import encode_features

T = TypeVar("T")
U = TypeVar("U")


class Stamped(Generic[T]):
    """An item with the watermark of the partition it was read from (see StreamClock).

    An event read from Kafka keeps its original bytes (``raw``, with the time
    it was received): when a cluster sends it to the worker that owns its
    key, it travels as those bytes and is decoded again there, which is the
    same event (decoding is deterministic) at a fraction of the cost of
    pickling the decoded Structs (measured: pickling was a third of a
    worker's time with two processes).
    """

    __slots__ = ("item", "raw", "received", "source", "watermark")

    def __init__(
        self,
        item: T,
        source: str = "",
        watermark: float = float("-inf"),
        raw: bytes | None = None,
        received: float = 0.0,
    ) -> None:
        self.item = item
        self.source = source
        self.watermark = watermark
        self.raw = raw
        self.received = received

    def carrying(self, item: U) -> Stamped[U]:
        return Stamped(item, self.source, self.watermark)

    def __reduce__(self) -> tuple[Any, ...]:
        item = self.item
        if self.raw is not None:
            if isinstance(item, ToCustomer):
                if item.merge is None and item.erase_at is None:
                    return _restore_to_customer, (
                        item.customer_id,
                        self.raw,
                        self.received,
                        self.source,
                        self.watermark,
                    )
            elif isinstance(item, BaseEvent):
                return _restore_event, (self.raw, self.received, self.source, self.watermark)
        return Stamped, (item, self.source, self.watermark)


def _decoded(raw: bytes, received: float) -> BaseEvent:
    event = decode_event(raw, received)
    assert isinstance(event, BaseEvent)  # it decoded once already
    return event


def _restore_to_customer(
    customer_id: str, raw: bytes, received: float, source: str, watermark: float
) -> Stamped[ToCustomer]:
    item = ToCustomer(customer_id, _decoded(raw, received))
    return Stamped(item, source, watermark, raw, received)


def _restore_event(raw: bytes, received: float, source: str, watermark: float) -> Stamped[Any]:
    return Stamped(_decoded(raw, received), source, watermark, raw, received)


class StepOut:
    """What a state step's key did with one batch: its effects in order, less the
    profile changes, which collapse into the view of the last state."""

    __slots__ = (
        "_changed",
        "effects",
        "emails",
        "features",
        "forward",
        "items",
        "nba",
        "unindex",
        "views",
    )

    def __init__(self) -> None:
        self.effects: list[Effect] = []
        # customer key -> encoded view, or None for a profile that was removed
        self.views: dict[str, bytes | None] = {}
        # customer key -> the recommender's items (engine/recs/shopper.py), encoded
        self.items: dict[str, bytes] = {}
        # customer key -> the score models' features as of the last event, encoded
        self.features: dict[str, bytes] = {}
        # customer key -> the digest of an e-mail address to index it under
        # (engine/email_index.py): only when it differs from the last indexed
        self.emails: dict[str, str] = {}
        # customer keys erased in this batch: out of the e-mail index first
        self.unindex: set[str] = set()
        self.forward: list[Stamped[ToCustomer]] = []  # anonymous ids: on to a customer
        # Next-best-action inputs, in the order of the events (dataflows/nba_inputs.py).
        self.nba: list[Input] = []
        self._changed: dict[str, CustomerState] = {}

    def add(self, effects: Iterable[Any]) -> None:
        """Effects of one step of the engine, in order; the views wait for ``seal``."""
        for effect in effects:
            if isinstance(effect, ProfileChanged):
                self._changed[effect.state.customer_id] = effect.state
                self.views.pop(effect.state.customer_id, None)
            elif isinstance(effect, ProfileRemoved):
                self._changed.pop(effect.customer_key, None)
                self.views[effect.customer_key] = None
            else:
                self.effects.append(effect)

    def seal(self) -> list[StepOut]:
        """Encode each changed view once, from its last state; nothing if there is
        nothing to say."""
        for key, state in self._changed.items():
            self.views[key] = encode_view(profile_view(state))
            if state.shopper.viewed or state.shopper.bought:
                self.items[key] = encode_items(state.shopper)
            if state.scores is not None:  # scored (known customers, scores on)
                at = state.last_seen
                self.features[key] = encode_features(at, features(state, at))
        if self.views or self.effects or self.forward or self.nba or self.emails or self.unindex:
            return [self]
        return []


class WakeUp:
    """When a key asked to be woken, kept while it lies ahead and the key's
    earliest due time has not come closer.

    Bytewax asks every key that saw a batch when to wake it. Most keys' due
    time only moved later (a win-back weeks away, re-armed by each event), and
    the answer given last time still stands while it lies ahead: asking the stream
    clock again, and queueing another wake-up for the source to honour
    (``Wakeups``), cost more than the engine's work on some events. Waking
    early or late only costs time: the engine decides as of the due time.
    """

    __slots__ = ("_at", "_due", "_wall")

    def __init__(self) -> None:
        self._due: float | None = None
        self._wall = 0.0
        self._at: datetime | None = None

    def at(self, due: float | None, clock: StreamClock) -> datetime | None:
        if due is None:
            self._due = None
            return None
        wall = time.time()
        if self._due is not None and due >= self._due and self._wall > wall:
            # Still ahead, and for a due time no later: waking then finds
            # nothing due at worst, and asks again.
            return self._at
        self._at = clock.wake_at(due, wall)
        self._due, self._wall = due, self._at.timestamp()
        return self._at


def _observe(clock: StreamClock, values: list[Stamped[Any]]) -> None:
    """Tell the clock the watermarks a key's batch carries: the latest per
    source (they only grow in the order a source read them)."""
    wall = time.time()
    source, mark = values[0].source, values[0].watermark
    for value in values:
        if value.source != source:
            clock.observe(source, mark, wall)
            source = value.source
        mark = value.watermark
    clock.observe(source, mark, wall)


class CustomerLogic(StatefulBatchLogic[Stamped[ToCustomer], StepOut, bytes]):
    """A known customer's state: merges anonymous profiles, applies events.

    With next-best-action on (``nba``), each event applied gives the policy
    what it needs of the profile just updated (dataflows/nba_inputs.py)."""

    def __init__(
        self,
        engine: Engine,
        clock: StreamClock,
        snapshot: bytes | None,
        recovery: bool = True,
        nba: CustomerSide | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._recovery = recovery
        self._nba = nba
        self._state = decode_state(_bytes(snapshot)) if snapshot is not None else None
        self._wake = WakeUp()
        # The e-mail digest this process last indexed the customer under: after a
        # restart it is indexed once more, which changes nothing (sets).
        self._indexed: str | None = None

    def on_batch(self, values: list[Stamped[ToCustomer]]) -> tuple[Iterable[StepOut], bool]:
        _observe(self._clock, values)
        out = StepOut()
        engine = self._engine
        nba = self._nba
        for value in values:
            item = value.item
            if item.erase_at is not None:
                self._state, effects = engine.erase(self._state, item.customer_id, item.erase_at)
                out.add(effects)
                out.unindex.add(item.customer_id)
                out.emails.pop(item.customer_id, None)
                self._indexed = None
                continue
            if item.merge is not None:
                self._state, merged = identity.absorb(
                    engine, self._state, item.merge, item.customer_id
                )
                out.add(merged)
            if item.event is not None:
                self._state, effects = engine.apply(self._state, item.event)
                out.add(effects)
                if nba is not None and applied(effects):
                    out.nba += nba.inputs(self._state, item.event)
        self._index_email(out)
        return out.seal(), StatefulBatchLogic.RETAIN

    def _index_email(self, out: StepOut) -> None:
        state = self._state
        address = state.traits.get("email") if state is not None else None
        if state is None or not address or state.merged_into:
            return
        key = digest(address)
        if key != self._indexed:
            out.emails[state.customer_id] = key
            self._indexed = key

    def on_notify(self) -> tuple[Iterable[StepOut], bool]:
        if self._state is None:
            return (), StatefulBatchLogic.DISCARD
        until = self._clock.now(time.time())
        out = StepOut()
        out.add(self._engine.fire_due(self._state, until))
        return out.seal(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[StepOut], bool]:
        return (), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._state is None:
            return None
        return self._wake.at(Engine.next_due(self._state), self._clock)

    def snapshot(self) -> bytes:
        # Bytewax asks at every epoch's end even when it keeps nothing.
        if not self._recovery:
            return b""
        assert self._state is not None
        return encode_state(self._state)


AnonymousInput = BaseEvent | Link | EraseAnonymous


class AnonymousLogic(StatefulBatchLogic[Stamped[AnonymousInput], StepOut, bytes]):
    """An anonymous id's state: its own profile until identified, then an alias."""

    def __init__(
        self,
        engine: Engine,
        clock: StreamClock,
        snapshot: bytes | None,
        recovery: bool = True,
        nba: CustomerSide | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._recovery = recovery
        self._nba = nba
        self._state = decode_anonymous(_bytes(snapshot)) if snapshot is not None else None
        self._wake = WakeUp()

    def on_batch(self, values: list[Stamped[AnonymousInput]]) -> tuple[Iterable[StepOut], bool]:
        _observe(self._clock, values)
        out = StepOut()
        nba = self._nba
        for value in values:
            self._state, results = identity.resolve(self._engine, self._state, value.item)
            effects: list[Effect] = []
            for result in results:
                if isinstance(result, ToCustomer):
                    # What goes on to a customer keeps the stamp of its partition.
                    out.forward.append(value.carrying(result))
                else:
                    effects.append(result)
            out.add(effects)
            # An anonymous shopper's own profile (until identified) gets decisions too.
            item = value.item
            profile = self._state.profile
            if nba is not None and profile is not None and applied(effects):
                assert isinstance(item, BaseEvent)  # only events change the profile
                out.nba += nba.inputs(profile, item)
        return out.seal(), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[StepOut], bool]:
        if self._state is None:
            return (), StatefulBatchLogic.DISCARD
        until = self._clock.now(time.time())
        out = StepOut()
        out.add(identity.fire_due(self._engine, self._state, until))
        return out.seal(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[StepOut], bool]:
        return (), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._state is None:
            return None
        return self._wake.at(identity.next_due(self._state), self._clock)

    def snapshot(self) -> bytes:
        if not self._recovery:
            return b""
        assert self._state is not None
        return encode_anonymous(self._state)


class IncompatibleSnapshot(RuntimeError):
    """A recovery snapshot this version cannot read."""


def _bytes(snapshot: object) -> bytes:
    """Snapshots are MessagePack bytes; anything else was written by another
    state version that forgot to bump engine.profile.STATE_VERSION."""
    if not isinstance(snapshot, bytes):
        raise IncompatibleSnapshot(
            f"a recovery snapshot holds a {type(snapshot).__name__}, not this version's "
            f"bytes (state version {STATE_VERSION}): move the recovery directory away "
            "and the dataflow rebuilds its state from the events topic"
        )
    return snapshot
