"""The customer's side of next-best-action in the flow: inputs for the policy.

Runs in the customer (and anonymous id) steps after the engine applied an
event, on the profile it just updated; adds nothing to the customer state.
"""

from __future__ import annotations

from typing import Any

from engine import events as ev
from engine.customer import DuplicateDropped, Engine, ProfileChanged
from engine.nba import customer as nba_customer
from engine.nba.book import ActionBook
from engine.nba.records import Input
from engine.profile import CustomerState
from engine.rules.context import Scope


class CustomerSide:
    """What the customer's step tells the policy about one event it applied."""

    __slots__ = ("book", "engine", "listens")

    def __init__(self, book: ActionBook, engine: Engine) -> None:
        self.book = book
        self.engine = engine
        # Event types that can give an input: a context, a reward, an explicit reward.
        self.listens = frozenset(book.decide_on | set(book.rewards) | {"custom"})

    def inputs(self, state: CustomerState, event: ev.BaseEvent) -> list[Input]:
        if ev.event_type(event) not in self.listens:
            return []
        engine = self.engine
        ts = event.ts
        zone = engine.book.at(ts).policy.timezone
        return nba_customer.inputs(self.book, Scope(state, event, ts, engine.loyalty, zone), event)


def applied(effects: list[Any]) -> bool:
    """The engine applied the event to the profile (not a duplicate, not ignored
    after an erasure, not forwarded to the customer it was merged into)."""
    return (
        bool(effects)
        and type(effects[-1]) is ProfileChanged
        and type(effects[0]) is not DuplicateDropped
    )
