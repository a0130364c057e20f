"""Bytewax stateful logic around the pure engine: one instance per key.

Timers are part of the state, so after a crash they come back with the
snapshot and fire from Bytewax's own notification mechanism.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from bytewax.operators import StatefulLogic

from engine import identity
from engine.customer import Effect, Engine
from engine.events import BaseEvent
from engine.identity import AnonymousState, Link, ToCustomer
from engine.privacy import EraseAnonymous
from engine.profile import CustomerState


def _at(due: float | None) -> datetime | None:
    return None if due is None else datetime.fromtimestamp(due, tz=UTC)


class CustomerLogic(StatefulLogic[ToCustomer, Effect, CustomerState]):
    """A known customer's state: merges anonymous profiles, applies events."""

    def __init__(self, engine: Engine, state: CustomerState | None) -> None:
        self._engine = engine
        self._state = state

    def on_item(self, value: ToCustomer) -> tuple[Iterable[Effect], bool]:
        effects: list[Effect] = []
        if value.erase_at is not None:
            self._state, effects = self._engine.erase(
                self._state, value.customer_id, value.erase_at
            )
            return effects, StatefulLogic.RETAIN
        if value.merge is not None:
            self._state, effects = self._engine.absorb(self._state, value.merge, value.customer_id)
        if value.event is not None:
            self._state, more = self._engine.apply(self._state, value.event, time.time())
            effects.extend(more)
        return effects, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Effect], bool]:
        if self._state is None:
            return (), StatefulLogic.DISCARD
        return self._engine.fire_due(self._state, time.time()), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Effect], bool]:
        return (), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return None if self._state is None else _at(Engine.next_due(self._state))

    def snapshot(self) -> CustomerState:
        assert self._state is not None
        return self._state


AnonymousInput = BaseEvent | Link | EraseAnonymous


class AnonymousLogic(StatefulLogic[AnonymousInput, ToCustomer | Effect, AnonymousState]):
    """An anonymous id's state: its own profile until identified, then an alias."""

    def __init__(self, engine: Engine, state: AnonymousState | None) -> None:
        self._engine = engine
        self._state = state

    def on_item(self, value: AnonymousInput) -> tuple[Iterable[ToCustomer | Effect], bool]:
        self._state, out = identity.resolve(self._engine, self._state, value, time.time())
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[ToCustomer | Effect], bool]:
        if self._state is None:
            return (), StatefulLogic.DISCARD
        return identity.fire_due(self._engine, self._state, time.time()), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[ToCustomer | Effect], bool]:
        return (), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return None if self._state is None else _at(identity.next_due(self._state))

    def snapshot(self) -> AnonymousState:
        assert self._state is not None
        return self._state
