"""Inputs held until the stream clock passes them, then released in event-time order:
however the stream is cut into batches, and across a snapshot, the policy
makes the same decisions and learns the same things."""

from __future__ import annotations

import random

import msgspec

from engine.nba.order import InOrder, Waiting
from engine.nba.policy import NextBestAction
from engine.nba.records import Context, Effect, Input, Signal
from tests.nba_helpers import ACTIONS, T0, book, context, signal


def _stream(rng: random.Random, customers: int = 12, per_customer: int = 15) -> list[list[Input]]:
    """Each customer's inputs in their own order (times increasing, some equal)."""
    out = []
    for c in range(customers):
        at = T0 + rng.uniform(0, 100)
        mine: list[Input] = []
        for n in range(per_customer):
            at += rng.choice((0.0, 0.0, rng.uniform(0, 400)))
            if rng.random() < 0.3:
                mine.append(signal(f"c{c}", at, rng.choice((0.2, 0.5, 1.0))))
            else:
                eligible = tuple(a for a in ACTIONS if a == "nothing" or rng.random() < 0.6)
                x = (1.0, *(round(rng.random(), 3) for _ in range(11)))
                mine.append(context(f"c{c}", at, f"e{c}-{n}", eligible, x))
        out.append(mine)
    return out


def _arrivals(rng: random.Random, stream: list[list[Input]]) -> list[Input]:
    """One possible arrival order: customers interleaved at random, each in its order."""
    queues = [list(q) for q in stream]
    out = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        out.append(q.pop(0))
    return out


def _canonical(stream: list[list[Input]]) -> list[Effect]:
    """Every input handled at once, in (time, customer, own order)."""
    held = InOrder()
    for inputs in stream:
        held.add(inputs)
    policy = NextBestAction(book(window="30m"))
    return policy.handle(held.release(float("inf"))) + policy.advance(float("inf"))


def _cut(rng: random.Random, stream: list[list[Input]], snapshot_every: int) -> list[Effect]:
    """Arrivals in random batches; after each, a release up to a time every input
    of which has arrived (what the stream clock guarantees); now and then a
    snapshot and a restore."""
    the_book = book(window="30m")
    arrivals = _arrivals(rng, stream)
    policy, held = NextBestAction(the_book), InOrder()
    effects: list[Effect] = []
    i = batches = 0
    while i < len(arrivals):
        size = rng.randint(1, 20)
        held.add(arrivals[i : i + size])
        i += size
        pending = arrivals[i:]
        safe = min((a.at for a in pending), default=float("inf"))
        # Any time short of the earliest input still to come.
        clock = safe - rng.uniform(0.001, 50) if pending else float("inf")
        effects += policy.handle(held.release(clock))
        effects += policy.advance(clock)
        batches += 1
        if batches % snapshot_every == 0:
            raw = msgspec.msgpack.encode(held.snapshot())
            held = InOrder.restore(msgspec.msgpack.decode(raw, type=list[Waiting]))
            policy = NextBestAction.restore(the_book, policy.snapshot())
    return effects


def test_release_is_in_time_then_customer_order_and_keeps_a_customers_own_order() -> None:
    held = InOrder()
    a1 = context("b", T0 + 5, "b1")
    a2 = signal("b", T0 + 5, 0.5)
    a3 = context("b", T0 + 5, "b2")
    held.add([context("z", T0 + 1, "z1"), a1])
    held.add([context("a", T0 + 5, "a1"), a2, a3, context("a", T0 + 9, "a2")])
    assert held.earliest() == T0 + 1
    assert held.release(T0) == []
    released = held.release(T0 + 5)
    assert [(i.customer_id, i.at) for i in released] == [
        ("z", T0 + 1),
        ("a", T0 + 5),
        ("b", T0 + 5),
        ("b", T0 + 5),
        ("b", T0 + 5),
    ]
    assert released[2:] == [a1, a2, a3]
    assert len(held) == 1 and held.earliest() == T0 + 9


def test_a_snapshot_keeps_both_kinds_and_their_order() -> None:
    held = InOrder()
    mixed: list[Input] = [context("c", T0, "c1"), signal("c", T0, 1.0), context("c", T0, "c2")]
    held.add(mixed)
    raw = msgspec.msgpack.encode(held.snapshot())
    back = InOrder.restore(msgspec.msgpack.decode(raw, type=list[Waiting]))
    released = back.release(T0)
    assert released == mixed
    assert isinstance(released[0], Context) and isinstance(released[1], Signal)


def test_the_policy_decides_alike_however_the_stream_is_cut() -> None:
    for seed in range(8):
        rng = random.Random(seed)
        stream = _stream(rng)
        expected = _canonical(stream)
        assert sum(1 for e in expected if type(e).__name__ == "Decision") > 20
        for snapshot_every in (3, 1000):
            assert _cut(rng, stream, snapshot_every) == expected, seed
