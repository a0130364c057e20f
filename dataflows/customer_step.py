"""Bytewax stateful logic around the pure engine: one instance per key.

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
from typing import Generic, TypeVar

from bytewax.operators import StatefulLogic

from dataflows.stream_clock import StreamClock
from engine import identity
from engine.customer import Effect, Engine
from engine.events import BaseEvent
from engine.identity import Link, ToCustomer, decode_anonymous, encode_anonymous
from engine.privacy import EraseAnonymous
from engine.profile import STATE_VERSION, decode_state, encode_state

T = TypeVar("T")
U = TypeVar("U")


class Stamped(Generic[T]):
    """An item with the watermark of the partition it was read from (see StreamClock)."""

    __slots__ = ("item", "source", "watermark")

    def __init__(self, item: T, source: str = "", watermark: float = float("-inf")) -> None:
        self.item = item
        self.source = source
        self.watermark = watermark

    def carrying(self, item: U) -> Stamped[U]:
        return Stamped(item, self.source, self.watermark)


class CustomerLogic(StatefulLogic[Stamped[ToCustomer], Effect, bytes]):
    """A known customer's state: merges anonymous profiles, applies events."""

    def __init__(self, engine: Engine, clock: StreamClock, snapshot: bytes | None) -> None:
        self._engine = engine
        self._clock = clock
        self._state = decode_state(_bytes(snapshot)) if snapshot is not None else None

    def on_item(self, value: Stamped[ToCustomer]) -> tuple[Iterable[Effect], bool]:
        self._clock.observe(value.source, value.watermark, time.time())
        item = value.item
        effects: list[Effect] = []
        if item.erase_at is not None:
            self._state, effects = self._engine.erase(self._state, item.customer_id, item.erase_at)
            return effects, StatefulLogic.RETAIN
        if item.merge is not None:
            self._state, effects = self._engine.absorb(self._state, item.merge, item.customer_id)
        if item.event is not None:
            self._state, more = self._engine.apply(self._state, item.event)
            effects.extend(more)
        return effects, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Effect], bool]:
        if self._state is None:
            return (), StatefulLogic.DISCARD
        until = self._clock.now(time.time())
        return self._engine.fire_due(self._state, until), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Effect], bool]:
        return (), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._state is None:
            return None
        due = Engine.next_due(self._state)
        return None if due is None else self._clock.wake_at(due, time.time())

    def snapshot(self) -> bytes:
        assert self._state is not None
        return encode_state(self._state)


AnonymousInput = BaseEvent | Link | EraseAnonymous
AnonymousOutput = Stamped[ToCustomer] | Effect


class AnonymousLogic(StatefulLogic[Stamped[AnonymousInput], AnonymousOutput, bytes]):
    """An anonymous id's state: its own profile until identified, then an alias."""

    def __init__(self, engine: Engine, clock: StreamClock, snapshot: bytes | None) -> None:
        self._engine = engine
        self._clock = clock
        self._state = decode_anonymous(_bytes(snapshot)) if snapshot is not None else None

    def on_item(self, value: Stamped[AnonymousInput]) -> tuple[Iterable[AnonymousOutput], bool]:
        self._clock.observe(value.source, value.watermark, time.time())
        self._state, out = identity.resolve(self._engine, self._state, value.item)
        # What goes on to a customer keeps the stamp of the partition it came from.
        return [value.carrying(o) if isinstance(o, ToCustomer) else o for o in out], (
            StatefulLogic.RETAIN
        )

    def on_notify(self) -> tuple[Iterable[AnonymousOutput], bool]:
        if self._state is None:
            return (), StatefulLogic.DISCARD
        until = self._clock.now(time.time())
        return identity.fire_due(self._engine, self._state, until), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[AnonymousOutput], bool]:
        return (), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._state is None:
            return None
        due = identity.next_due(self._state)
        return None if due is None else self._clock.wake_at(due, time.time())

    def snapshot(self) -> bytes:
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
