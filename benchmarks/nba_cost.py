"""What next-best-action costs per event on the dataflow's hot path, in-process.

The events are benchmarks/profiles.py's synthetic mix (views, carts, orders,
identifies over ``--customers``), applied in order by the engine with the
shipped rules, as the customer step does; then, per event the engine applied,
the customer's side (dataflows/nba_inputs.py: a Scope, the reward conditions,
the eligibility of each action, the features) and, in event-time order, the
policy (engine/nba/policy.py). CPU time of this process, best of ``--rounds``
(other work on the machine only ever makes a round slower), per event of the
stream, so they compare with what the flow pays per event. The parts of the
customer's side are timed each in a pass of their own, on the events whose
type is in ``decide_on``, with no values shared between them: together they
come to a little more than the whole, where one Scope serves them all.

    python -m benchmarks.nba_cost [--customers 5000] [--events-per-customer 10]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from benchmarks.profiles import synthetic_events
from dataflows.nba_inputs import CustomerSide, applied
from engine.customer import Engine
from engine.decode import decode_event
from engine.events import BaseEvent, event_type
from engine.nba.book import ActionBook
from engine.nba.eligibility import holds
from engine.nba.features import features
from engine.nba.order import InOrder
from engine.nba.policy import NextBestAction
from engine.profile import CustomerState
from engine.rules.context import Scope
from engine.rules.ruleset import Expression, RuleBook
from pulse.rules_files import load_action_book, load_loyalty, load_rules
from pulse.settings import load_settings


def _engine(rules_dir: str) -> Engine:
    loaded = load_rules(rules_dir)
    assert loaded.rules is not None, loaded.problems
    return Engine(RuleBook(loaded.rules), loyalty=load_loyalty(rules_dir))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--events-per-customer", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rules_dir = load_settings().rules_dir
    loaded = load_action_book(rules_dir)
    assert loaded is not None and loaded.book is not None, "no valid actions.yaml"
    book: ActionBook = loaded.book
    events: list[BaseEvent] = []
    for raw in synthetic_events(args.customers, args.events_per_customer):
        event = decode_event(raw, 0.0)
        assert isinstance(event, BaseEvent)
        events.append(event)

    n = len(events)

    Part = Callable[[CustomerSide, CustomerState, BaseEvent], Any]

    def per_event(part: Part | None, every: bool = False) -> float:
        """The engine over the stream, timing only ``part`` after each event it
        applied (the engine itself when None), or only after those of a
        ``decide_on`` type unless ``every``: best of the rounds, per event."""
        best = float("inf")
        for _ in range(args.rounds):
            engine = _engine(rules_dir)
            side = CustomerSide(book, engine)
            states: dict[str, CustomerState] = {}
            spent = 0
            clock = time.process_time_ns
            started = clock()
            for event in events:
                key = event.customer_key
                state, effects = engine.apply(states.get(key), event)
                states[key] = state
                if (
                    part is not None
                    and applied(effects)
                    and (every or event_type(event) in book.decide_on)
                ):
                    t = clock()
                    part(side, state, event)
                    spent += clock() - t
            total = spent if part is not None else clock() - started
            best = min(best, total / 1e9)
        return best / n * 1e6

    def scope(side: CustomerSide, state: CustomerState, event: BaseEvent) -> Scope:
        return Scope(state, event, event.ts, side.engine.loyalty, "UTC")

    def inputs_of(side: CustomerSide, state: CustomerState, event: BaseEvent) -> Any:
        return side.inputs(state, event)

    def features_of(side: CustomerSide, state: CustomerState, event: BaseEvent) -> Any:
        return features(scope(side, state, event))

    def eligible(condition: Expression) -> Part:
        def run(side: CustomerSide, state: CustomerState, event: BaseEvent) -> Any:
            return holds(condition, scope(side, state, event))

        return run

    rows: list[tuple[str, float]] = [("engine.apply with the shipped rules", per_event(None))]
    rows.append(("customer side, all of it (CustomerSide.inputs)", per_event(inputs_of, True)))
    rows.append(("  of which a Scope", per_event(scope)))
    rows.append(("  of which the features", per_event(features_of)))
    rows.append(
        (
            "  of which the eligible set (remembered per values read)",
            per_event(lambda side, state, event: book.eligibility.of(scope(side, state, event))),
        )
    )
    for action in book.actions:
        if action.eligible is not None:
            rows.append(
                (f"  of which `{action.id}` eligible", per_event(eligible(action.eligible)))
            )
    engine = _engine(rules_dir)
    customer_side = CustomerSide(book, engine)
    states: dict[str, CustomerState] = {}
    inputs = []
    for event in events:
        key = event.customer_key
        state, effects = engine.apply(states.get(key), event)
        states[key] = state
        if applied(effects):
            inputs.append(customer_side.inputs(state, event))
    best = float("inf")
    for _ in range(args.rounds):
        held, policy = InOrder(), NextBestAction(book)
        started = time.process_time()
        for found in inputs:
            held.add(found)
        policy.handle(held.release(float("inf")))
        best = min(best, time.process_time() - started)
    rows.append(("policy: held in order, then handled", best / n * 1e6))
    print(f"{n:,} events, {sum(len(i) for i in inputs):,} inputs for the policy")
    print("| what | CPU µs per event |")
    print("|---|---|")
    for what, us in rows:
        print(f"| {what} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
