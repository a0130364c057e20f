"""Decisions waiting for their rewards, within a fixed memory.

A customer has at most one live decision (a new one settles the old), so the
ledger is a map by customer plus a map by decision id for explicit rewards,
and a heap of deadlines that settles each decision when its window ends. At
most ``limit`` decisions wait; past it the one whose window ends first is
settled early, with what it has earned, so memory does not grow with traffic
however long rewards take.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import msgspec


class Pending(msgspec.Struct, array_like=True, gc=False):
    """A decision still earning (mutable: ``reward`` and ``source`` grow)."""

    decision_id: str
    customer_id: str
    action: str
    at: float
    deadline: float
    eligible: tuple[str, ...]
    x: tuple[float, ...]  # the context it was made on (learned with the reward)
    learn: bool  # a real choice of the policy: not forced, not held out
    holdout: bool
    forced: bool
    reward: float = 0.0  # the largest weighted reward so far
    source: str = ""


class Ledger:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_customer: dict[str, Pending] = {}
        self.by_id: dict[str, Pending] = {}
        self._deadlines: list[tuple[float, str]] = []  # may hold settled ids: checked on pop

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Pending]:
        return iter(list(self.by_id.values()))

    def live(self, customer_id: str) -> Pending | None:
        return self.by_customer.get(customer_id)

    def get(self, decision_id: str) -> Pending | None:
        return self.by_id.get(decision_id)

    def add(self, pending: Pending) -> list[Pending]:
        """Keep a new decision (the customer's previous one must be removed
        first); returns those that must settle early to make room."""
        self.keep(pending)
        evicted = []
        while len(self.by_id) > self.limit:
            first = self.pop_first()
            assert first is not None
            evicted.append(first)
        return evicted

    def keep(self, pending: Pending) -> None:
        """Keep a decision whatever the limit (a restored one: the next ``add`` makes room)."""
        self.by_customer[pending.customer_id] = pending
        self.by_id[pending.decision_id] = pending
        heapq.heappush(self._deadlines, (pending.deadline, pending.decision_id))

    def remove(self, pending: Pending) -> None:
        self.by_id.pop(pending.decision_id, None)
        if self.by_customer.get(pending.customer_id) is pending:
            del self.by_customer[pending.customer_id]
        # Settled ids stay in the heap until they come up; keep it from growing
        # past twice the decisions that wait.
        if len(self._deadlines) > 2 * len(self.by_id) + 64:
            self._deadlines = [(p.deadline, p.decision_id) for p in self.by_id.values()]
            heapq.heapify(self._deadlines)

    def next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and heap[0][1] not in self.by_id:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_first(self) -> Pending | None:
        """The decision whose window ends first, removed."""
        if self.next_deadline() is None:
            return None
        _deadline, decision_id = heapq.heappop(self._deadlines)
        pending = self.by_id[decision_id]
        self.remove(pending)
        return pending

    def due(self, now: float) -> Iterator[Pending]:
        """Decisions whose window has ended by ``now``, earliest first, removed."""
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > now:
                return
            pending = self.pop_first()
            assert pending is not None
            yield pending
