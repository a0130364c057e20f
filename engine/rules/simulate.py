"""The engine on a simulated clock: rule tests, dry-runs and property tests.

Events go through the same code as in the dataflow (identity resolution, then
``Engine.apply`` per customer) and pending actions fire in global time order
as the clock advances with the events, so a week of history replays in
seconds and makes the decisions the live flow would have made.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

import msgspec

from engine import identity
from engine.control import CustomerMerged
from engine.customer import Effect, Engine, Forwarded
from engine.events import BaseEvent
from engine.identity import AnonymousState, Link, ToCustomer
from engine.profile import CustomerState

# Keys of the timer heap: customers by id, anonymous visitors by "~" + id (a
# customer id cannot start with "~" in practice and collisions only cost a poll).
_ANON = "~"


class Simulation:
    """Per-customer states plus one timer heap over all of them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.customers: dict[str, CustomerState] = {}
        self.anonymous: dict[str, AnonymousState] = {}
        self.clock = float("-inf")
        self._timers: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}  # key -> due in the heap (one entry each)

    def feed(self, event: BaseEvent) -> list[Effect]:
        """Advance the clock to the event's time, then apply it."""
        out = self.advance(event.ts)
        if event.customer_id is not None:
            out += self._to_customer(ToCustomer(event.customer_id, event))
            link = identity.link_of(event)
            if link is not None:
                out += self._to_anonymous(link)
        else:
            out += self._to_anonymous(event)
        return out

    def run(self, events: Iterable[BaseEvent], until: float | None = None) -> Iterator[Effect]:
        for event in events:
            yield from self.feed(event)
        if until is not None:
            yield from self.advance(until)

    def advance(self, until: float) -> list[Effect]:
        """Fire everything due at or before ``until``, oldest first across customers."""
        self.clock = max(self.clock, until)
        out: list[Effect] = []
        timers = self._timers
        while timers and timers[0][0] <= until:
            due, key = heapq.heappop(timers)
            if self._scheduled.get(key) == due:
                del self._scheduled[key]
            if key.startswith(_ANON):
                anon = self.anonymous.get(key[1:])
                if anon is None or identity.next_due(anon) != due:
                    continue  # stale: the timer moved or went
                out += identity.fire_due(self.engine, anon, due)
                self._schedule(key, identity.next_due(anon))
            else:
                state = self.customers.get(key)
                if state is None or Engine.next_due(state) != due:
                    continue
                out += self.engine.fire_due(state, due)
                self._schedule(key, Engine.next_due(state))
        return out

    def _to_customer(self, item: ToCustomer) -> list[Effect]:
        key = item.customer_id
        state = self.customers.get(key)
        effects: list[Effect | CustomerMerged] = []
        if item.erase_at is not None:
            state, erased = self.engine.erase(state, key, item.erase_at)
            effects += erased
        else:
            if item.merge is not None:
                state, merged = identity.absorb(self.engine, state, item.merge, key)
                effects += merged
            if item.event is not None:
                state, more = self.engine.apply(state, item.event)
                effects += more
        if state is not None:
            self.customers[key] = state
            self._schedule(key, Engine.next_due(state))
        return self._rerouted(effects)

    def _rerouted(self, effects: list[Effect | CustomerMerged]) -> list[Effect]:
        """What the dataflow sends back through Kafka after an alias of two known
        customers (engine/identity.py), delivered here at once."""
        out: list[Effect] = []
        for effect in effects:
            if isinstance(effect, CustomerMerged):
                out += self._to_customer(ToCustomer(effect.customer_id, merge=effect))
            elif isinstance(effect, Forwarded):
                event = msgspec.structs.replace(effect.event, customer_id=effect.customer_id)
                out += self._to_customer(ToCustomer(effect.customer_id, event))
                link = identity.link_of(event)
                if link is not None:
                    out += self._to_anonymous(link)
            else:
                out.append(effect)
        return out

    def _to_anonymous(self, item: BaseEvent | Link) -> list[Effect]:
        anonymous_id = item.anonymous_id
        assert anonymous_id is not None
        state, out = identity.resolve(self.engine, self.anonymous.get(anonymous_id), item)
        self.anonymous[anonymous_id] = state
        self._schedule(_ANON + anonymous_id, identity.next_due(state))
        effects: list[Effect] = []
        for produced in out:
            if isinstance(produced, ToCustomer):
                effects += self._to_customer(produced)
            else:
                effects.append(produced)
        return effects

    def _schedule(self, key: str, due: float | None) -> None:
        """Keep the heap at one live entry per key; superseded entries are skipped."""
        if due is not None and self._scheduled.get(key) != due:
            self._scheduled[key] = due
            heapq.heappush(self._timers, (due, key))
