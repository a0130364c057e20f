"""Next-best-action quality: the bandit against random and fixed choices, replayed
prequentially on synthetic shoppers.

The shoppers are synthetic (``benchmarks/nba_world.py`` says how they are made
and how they answer an offer): Pulse has no data set of offers shown and
answered, and a real history only shows answers to the offers that were made.
Every policy meets the same shoppers, the same visits and the same luck (each
answer is drawn from the shopper and the visit, not from what was shown).

Strictly in time order, one heap of events: each event goes through the engine
(``Engine.apply``, the profile the dataflow keeps), the customer's side of
next-best-action (``engine.nba.customer.inputs``: eligibility from
``rules/actions.yaml``, features, reward signals) and the policy; at the end
of each visit the website shows the customer's live decision, and the
shopper's answer (a click, an add to cart, an order) comes back later as
events, which reward the decision through the same engine code. A decision is
learned from only once its reward is settled, after it was made: test, then
train. Hold-outs are off here (every policy is measured on every visit).

Rows: ``bandit`` (rules/actions.yaml as shipped: LinUCB, 5 % exploration),
``random`` (an eligible action uniformly: the same engine with exploration 1),
``always <action>`` (that action whenever eligible, else nothing), and
``oracle``, which knows each shopper's hidden traits and the response model
and shows the action with the highest expected reward: the ceiling.

Columns, over visits where more than one action was eligible: the reward per
visit the engine credited (click 0.2, add to cart 0.5, order 1, times the
action's weight), the same expected from the response model (less noisy), the
orders the shown offers brought per 100 such visits, the expected reward in
the second half of the period (after learning). Then what the engine code
costs per call, best of five rounds on the trained policy.

    python -m benchmarks.nba_quality [--shoppers 3000] [--days 28] [--seed 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.common import print_table, write_json
from benchmarks.nba_world import (
    Shopper,
    Visit,
    answers,
    expected_reward,
    response,
    shoppers,
    visit,
)
from engine import events as ev
from engine.customer import Engine
from engine.loyalty import LoyaltyProgram
from engine.nba.book import ActionBook, load_actions
from engine.nba.customer import inputs
from engine.nba.policy import NextBestAction
from engine.nba.records import Context, Decision, Outcome
from engine.profile import CustomerState
from engine.rules.context import Scope
from pulse.rules_files import load_loyalty

REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 10, 5, tzinfo=UTC).timestamp()


class FixedAction(NextBestAction):
    """The same action whenever it is eligible, else the control."""

    def __init__(self, book: ActionBook, action: str) -> None:
        super().__init__(book)
        self.action = action

    def _choose(
        self, did: str, eligible: tuple[str, ...], x: tuple[float, ...]
    ) -> tuple[str, float, bool]:
        return (self.action if self.action in eligible else self.book.control), 1.0, False


class Oracle(NextBestAction):
    """Knows the shopper in front of it and the response model (set before each event)."""

    shopper: Shopper | None = None
    state: CustomerState | None = None

    def _choose(
        self, did: str, eligible: tuple[str, ...], x: tuple[float, ...]
    ) -> tuple[str, float, bool]:
        assert self.shopper is not None and self.state is not None
        shopper, state = self.shopper, self.state
        best = max(
            eligible,
            key=lambda a: expected_reward(
                response(shopper, a, state.cart_value, state.orders > 0),
                self.book.by_id[a].weight,
            ),
        )
        return best, 1.0, False


@dataclass
class Show:
    """The end of a visit: the website shows the live decision."""

    visit: Visit


@dataclass
class Tally:
    visits: int = 0  # visits with a choice
    credited: float = 0.0
    expected: float = 0.0
    orders: int = 0
    late_visits: int = 0
    late_expected: float = 0.0
    shown: dict[str, int] = field(default_factory=dict)
    event_ns: list[int] = field(default_factory=list)  # customer side + policy, per event
    decide_ns: list[int] = field(default_factory=list)  # policy calls that made a real choice


def replay(
    policy: NextBestAction,
    book: ActionBook,
    loyalty: LoyaltyProgram,
    world: list[Shopper],
    seed: int,
    midpoint: float,
) -> Tally:
    engine = Engine(loyalty=loyalty)
    states: dict[str, CustomerState] = {}
    heap: list[tuple[float, int, ev.BaseEvent | Show]] = []
    seq = 0
    for shopper in world:
        for number in range(len(shopper.visits)):
            v = visit(shopper, number, seed)
            for event in v.events:
                heap.append((event.ts, seq, event))
                seq += 1
            heap.append((v.ends, seq, Show(v)))
            seq += 1
    heapq.heapify(heap)
    by_id = {s.id: s for s in world}
    decisions: dict[str, Decision] = {}
    outcomes: dict[str, Outcome] = {}
    shown_visits: list[tuple[str, float, float]] = []  # decision id, visit end, expected
    tally = Tally()
    while heap:
        at, _seq, item = heapq.heappop(heap)
        if isinstance(item, Show):
            shopper = item.visit.shopper
            live = policy.ledger.live(shopper.id)
            state = states.get(shopper.id)
            if live is None or state is None or live.forced:
                continue
            r = response(shopper, live.action, state.cart_value, state.orders > 0)
            weight = book.by_id[live.action].weight
            expected = expected_reward(r, weight)
            cart = [(line.sku, line.price * line.quantity) for line in state.cart.values()]
            for answer in answers(shopper, item.visit.number, seed, live.decision_id, r, at, cart):
                tally.orders += isinstance(answer, ev.OrderPlaced)
                heapq.heappush(heap, (answer.ts, seq, answer))
                seq += 1
            shown_visits.append((live.decision_id, at, expected))
            tally.shown[live.action] = tally.shown.get(live.action, 0) + 1
            continue
        event = item
        key = event.customer_key
        state, _effects = engine.apply(states.get(key), event)
        states[key] = state
        if isinstance(policy, Oracle):
            policy.shopper, policy.state = by_id[key], state
        started = time.perf_counter_ns()
        found = inputs(book, Scope(state, event, event.ts, loyalty, "UTC"), event)
        before_decide = time.perf_counter_ns()
        effects = policy.handle(found)
        ended = time.perf_counter_ns()
        tally.event_ns.append(ended - started)
        for effect in effects:
            if isinstance(effect, Decision):
                decisions[effect.decision_id] = effect
                if not effect.forced and any(isinstance(i, Context) for i in found):
                    tally.decide_ns.append(ended - before_decide)
            else:
                outcomes[effect.decision_id] = effect
    for effect in policy.advance(math.inf):
        if isinstance(effect, Outcome):
            outcomes[effect.decision_id] = effect
    counted: set[str] = set()
    for decision_id, at, expected in shown_visits:
        tally.visits += 1
        tally.expected += expected
        if at >= midpoint:
            tally.late_visits += 1
            tally.late_expected += expected
        if decision_id not in counted:  # a decision shown on two visits earns once
            counted.add(decision_id)
            tally.credited += outcomes[decision_id].reward
    return tally


def costs(policy: NextBestAction, book: ActionBook, loyalty: LoyaltyProgram) -> dict[str, float]:
    """CPU microseconds per call, best of five rounds of 2,000 (CPU time of this
    process, and the best round: other processes on the machine only ever make
    a round slower), on a shopper with a cart and an order behind them,
    against the trained policy."""
    engine = Engine(loyalty=loyalty)
    state: CustomerState | None = None
    at = START + 40 * 86400.0
    steps: list[ev.BaseEvent] = [
        ev.Identify(event_id="i", customer_id="x", traits=ev.Traits(email="x@example.com")),
        ev.ProductView(event_id="v1", customer_id="x", sku="a", price=30.0),
        ev.OrderPlaced(event_id="o", customer_id="x", order_id="o", total=30.0),
        ev.ProductView(event_id="v2", customer_id="x", sku="b", price=12.0),
        ev.AddToCart(event_id="c", customer_id="x", sku="b", price=24.0),
    ]
    for i, step in enumerate(steps):
        stamped = _at(step, at + i)
        state, _effects = engine.apply(state, stamped)
    assert state is not None
    last = _at(steps[-1], at + len(steps))

    def scope() -> Scope:
        assert state is not None
        return Scope(state, last, last.ts, loyalty, "UTC")

    [ctx] = [i for i in inputs(book, scope(), last) if isinstance(i, Context)]

    def best(run: Callable[[int, int], object]) -> float:
        rounds = []
        for r in range(5):
            started = time.process_time_ns()
            for n in range(2000):
                run(r, n)
            rounds.append((time.process_time_ns() - started) / 2000 / 1000)
        return min(rounds)

    return {
        "customer side per event (eligibility + features)": best(
            lambda r, n: inputs(book, scope(), last)
        ),
        f"policy: a new decision among {len(ctx.eligible)} actions": best(
            lambda r, n: policy.handle(
                [msgspec.structs.replace(ctx, customer_id=f"cost{r}-{n}", at=ctx.at + r)]
            )
        ),
        "policy: the live decision stands": best(
            lambda r, n: policy.handle([msgspec.structs.replace(ctx, origin=f"again{r}-{n}")])
        ),
        "snapshot bytes per pending decision": len(policy.snapshot()) / max(1, len(policy.ledger)),
    }


def _at(event: ev.BaseEvent, ts: float) -> ev.BaseEvent:
    return msgspec.structs.replace(event, timestamp=datetime.fromtimestamp(ts, tz=UTC))


def policies(book: ActionBook) -> list[tuple[str, NextBestAction]]:
    offers = [a.id for a in book.actions if a.id != book.control]
    rows: list[tuple[str, NextBestAction]] = [
        ("bandit (LinUCB)", NextBestAction(book)),
        ("random", NextBestAction(dataclasses.replace(book, exploration=1.0))),
    ]
    rows += [(f"always {a}", FixedAction(book, a)) for a in [*offers, book.control]]
    rows.append(("oracle (knows the model)", Oracle(book)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.nba_quality",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--shoppers", type=int, default=3000, help="synthetic shoppers")
    parser.add_argument("--days", type=float, default=28.0, help="length of the period")
    parser.add_argument("--seed", type=int, default=7, help="the shoppers and their luck")
    parser.add_argument(
        "--rules-dir", default=str(REPO / "rules"), help="where actions.yaml and loyalty.yaml are"
    )
    parser.add_argument("--json", default="nba_quality", help="results file name (no .json)")
    args = parser.parse_args(argv)

    rules_dir = Path(args.rules_dir)
    loaded = load_actions(str(rules_dir / "actions.yaml"), (rules_dir / "actions.yaml").read_text())
    if loaded.book is None:
        for problem in loaded.problems:
            print(problem)
        return 1
    # Hold-outs off: every policy is measured on every visit.
    book = dataclasses.replace(loaded.book, holdout=0.0)
    loyalty = load_loyalty(rules_dir)
    world = shoppers(args.shoppers, args.days, START, args.seed)
    midpoint = START + args.days * 86400.0 / 2
    visits = sum(len(s.visits) for s in world)
    print(
        f"{len(world):,} synthetic shoppers, {visits:,} visits over {args.days:g} days "
        f"(seed {args.seed}); actions.yaml version {book.version}"
    )
    rows = []
    results: dict[str, Any] = {}
    trained = NextBestAction(book)
    for name, policy in policies(book):
        started = time.process_time()
        t = replay(policy, book, loyalty, world, args.seed, midpoint)
        seconds = time.process_time() - started
        n = max(1, t.visits)
        per_event = statistics.fmean(t.event_ns) / 1000 if t.event_ns else 0.0
        per_decision = statistics.median(t.decide_ns) / 1000 if t.decide_ns else 0.0
        result = {
            "visits_with_a_choice": t.visits,
            "credited_reward_per_visit": t.credited / n,
            "expected_reward_per_visit": t.expected / n,
            "orders_per_100_visits": 100.0 * t.orders / n,
            "expected_reward_second_half": t.late_expected / max(1, t.late_visits),
            "shown": dict(sorted(t.shown.items())),
            "nba_us_per_event_mean_in_replay": per_event,
            "policy_us_per_decision_median": per_decision,
            "cpu_seconds": seconds,
        }
        results[name] = result
        if name.startswith("bandit"):
            trained = policy
        rows.append(
            [
                name,
                f"{t.visits:,}",
                f"{result['credited_reward_per_visit']:.4f}",
                f"{result['expected_reward_per_visit']:.4f}",
                f"{result['orders_per_100_visits']:.2f}",
                f"{result['expected_reward_second_half']:.4f}",
            ]
        )
        print(f"  {name}: {seconds:.1f} s")
    print_table(
        "next-best-action on synthetic shoppers (prequential, in time order)",
        [
            "policy",
            "visits",
            "reward/visit",
            "expected/visit",
            "orders/100",
            "expected, 2nd half",
        ],
        rows,
    )
    bandit = results["bandit (LinUCB)"]
    print(f"\nbandit shown: {bandit['shown']}")
    cost = costs(trained, book, loyalty)
    print_table(
        "cost per call, CPU µs (best of 5 x 2,000)",
        ["what", "µs"],
        [[k, f"{v:.1f}" if "bytes" not in k else f"{v:.0f} bytes"] for k, v in cost.items()],
    )
    path = write_json(
        args.json,
        {
            "shoppers": len(world),
            "visits": visits,
            "days": args.days,
            "seed": args.seed,
            "actions_version": book.version,
            "policies": results,
            "cost_us": cost,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
