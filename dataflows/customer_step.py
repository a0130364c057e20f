"""Bytewax stateful logic around the pure engine: one instance per customer key."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from bytewax.operators import StatefulLogic

from engine.customer import Effect, Engine
from engine.events import BaseEvent
from engine.profile import CustomerState


class CustomerLogic(StatefulLogic[BaseEvent, Effect, CustomerState]):
    """Feeds events and timer wake-ups to ``Engine`` and snapshots its state.

    Timers are part of the state, so after a crash they come back with the
    snapshot and fire from Bytewax's own notification mechanism.
    """

    def __init__(self, engine: Engine, state: CustomerState | None) -> None:
        self._engine = engine
        self._state = state

    def on_item(self, value: BaseEvent) -> tuple[Iterable[Effect], bool]:
        self._state, effects = self._engine.apply(self._state, value, time.time())
        return effects, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Effect], bool]:
        if self._state is None:
            return (), StatefulLogic.DISCARD
        return self._engine.fire_due(self._state, time.time()), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Effect], bool]:
        return (), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._state is None:
            return None
        due = Engine.next_due(self._state)
        return None if due is None else datetime.fromtimestamp(due, tz=UTC)

    def snapshot(self) -> CustomerState:
        assert self._state is not None
        return self._state
