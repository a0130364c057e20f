"""Inputs held until the stream has passed their time, then handed over in event-time order.

One policy learns from every customer, so what it chooses for one depends on
what it learned from the others before. Inputs reach it in batches whose
boundaries depend on how fast partitions were read, on crashes and restarts
and on the number of workers; handed over as they come, a decision would see
a model that had or had not yet learned from another customer's order of a
second before, and a replay would choose otherwise than the run it replays.

``InOrder`` keeps inputs until the dataflow's stream clock (the event time
every partition has certainly passed) reaches their time, and releases them
sorted by (event time, customer id), a customer's own inputs of the same time
in the order they came (a customer's events reach the policy in the order the
customer's step applied them). Everything released up to a time is then the
same set, in the same order, however the stream was cut: the policy makes the
same decisions, with the same ids, and learns the same things after a crash
or on another number of workers. The price is the stream clock's delay: live,
a decision is made ``event_lateness_s`` (and a wake-up) after its event.

An input that arrives after the clock has passed its time (an event later
than the allowed lateness) is released with the next release, in the order
it came: handled, not lost, but not in a replay-proof place.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import msgspec

from engine.nba.records import Context, Input, Signal


class Waiting(msgspec.Struct, array_like=True, gc=False):
    """One held input, as a snapshot keeps it (one of the two is set)."""

    context: Context | None = None
    signal: Signal | None = None

    @property
    def input(self) -> Input:
        found = self.context if self.context is not None else self.signal
        assert found is not None
        return found


class InOrder:
    def __init__(self) -> None:
        self._heap: list[tuple[float, str, int, Input]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, inputs: Iterable[Input]) -> None:
        heap = self._heap
        seq = self._seq
        for item in inputs:
            heapq.heappush(heap, (item.at, item.customer_id, seq, item))
            seq += 1
        self._seq = seq

    def release(self, until: float) -> list[Input]:
        """The inputs of event time up to ``until``, removed, in order."""
        heap = self._heap
        out: list[Input] = []
        while heap and heap[0][0] <= until:
            out.append(heapq.heappop(heap)[3])
        return out

    def earliest(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def snapshot(self) -> list[Waiting]:
        return [
            Waiting(context=i) if isinstance(i, Context) else Waiting(signal=i)
            for _at, _c, _s, i in sorted(self._heap)
        ]

    @classmethod
    def restore(cls, waiting: Iterable[Waiting]) -> InOrder:
        held = cls()
        held.add(w.input for w in waiting)
        return held
