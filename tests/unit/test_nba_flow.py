"""The dataflow's next-best-action pieces without Kafka or Redis: the customer's
side after each event, the shard a customer meets, the policy step's holding
of inputs until the stream clock passes them, and its snapshot."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dataflows.metrics import FlowMetrics
from dataflows.nba_inputs import CustomerSide, applied
from dataflows.nba_step import PolicyLogic, shard_key
from dataflows.run import build_actions
from engine import events as ev
from engine.customer import Engine
from engine.nba.policy import NextBestAction
from engine.nba.records import Context, Decision, Outcome, Signal
from pulse.rules_files import RulesFileError, load_action_book
from pulse.settings import load_settings
from tests.nba_helpers import T0, book, context, signal


def _shipped() -> Any:
    loaded = load_action_book(load_settings(environ={}).rules_dir)
    assert loaded is not None and loaded.book is not None
    return loaded.book


def _at(event: ev.BaseEvent, ts: float) -> ev.BaseEvent:
    return msgspec.structs.replace(event, timestamp=datetime.fromtimestamp(ts, tz=UTC))


class _Clock:
    """The stream clock's two answers, set by the test."""

    def __init__(self) -> None:
        self.value = -math.inf

    def now(self, wall: float) -> float:
        return self.value

    def wake_at(self, due: float, wall: float) -> datetime:
        return datetime.fromtimestamp(wall + 1, tz=UTC)


def test_the_customer_side_gives_rewards_then_contexts_for_applied_events() -> None:
    engine = Engine()
    side = CustomerSide(_shipped(), engine)
    state = None
    steps = [
        ev.ProductView(event_id="v1", customer_id="x", sku="a", price=30.0),
        ev.AddToCart(event_id="c1", customer_id="x", sku="a", price=30.0),
        ev.MessageOpened(event_id="m1", customer_id="x", message_id="m", message_channel="email"),
    ]
    found = []
    for n, step in enumerate(steps):
        event = _at(step, T0 + n)
        state, effects = engine.apply(state, event)
        assert applied(effects)
        found.append(side.inputs(state, event))
    view, cart, opened = found
    assert [type(i) for i in view] == [Context]
    assert [type(i) for i in cart] == [Signal, Context]  # the reward first, then the context
    decide = cart[1]
    assert isinstance(decide, Context)
    assert decide.origin == "c1" and "discount" in decide.eligible
    assert opened == []  # Pulse's own message events are not the shopper's activity
    # The same event again is a duplicate: nothing for the policy.
    assert state is not None
    state, effects = engine.apply(state, _at(steps[0], T0))
    assert not applied(effects)


def test_a_customer_always_meets_the_same_shard() -> None:
    assert shard_key("anyone", 1) == "nba:0"
    shards = [shard_key(f"c-{n}", 4) for n in range(400)]
    assert shards == [shard_key(f"c-{n}", 4) for n in range(400)]
    assert set(shards) == {"nba:0", "nba:1", "nba:2", "nba:3"}


def test_the_policy_step_holds_inputs_until_the_stream_has_passed_them() -> None:
    clock = _Clock()
    the_book = book(window="1h")
    logic = PolicyLogic(the_book, clock, None)  # type: ignore[arg-type]
    out, _ = logic.on_batch([[context("a", T0, "a1")], [context("b", T0 + 10, "b1")]])
    assert list(out) == []  # the stream's time is not known yet
    clock.value = T0 + 5
    out, _ = logic.on_notify()
    [effects] = list(out)
    assert [(type(e), e.customer_id) for e in effects] == [(Decision, "a")]
    # The snapshot keeps b's input, still waiting, and the live decision of a.
    restored = PolicyLogic(the_book, clock, logic.snapshot())  # type: ignore[arg-type]
    assert restored.notify_at() is not None
    clock.value = T0 + 3600 + 20  # past b's time, and past a's window
    out, _ = restored.on_batch([[signal("a", T0 + 20, 1.0)]])
    [effects] = list(out)
    kinds = [(type(e).__name__, e.customer_id) for e in effects]
    assert kinds == [("Decision", "b"), ("Outcome", "a"), ("Outcome", "b")]
    assert [e.reason for e in effects[1:] if isinstance(e, Outcome)] == ["converted", "expired"]


def test_a_broken_actions_file_stops_the_start_and_none_turns_nba_off(tmp_path: Path) -> None:
    settings = load_settings(environ={}, rules_dir=str(tmp_path))
    assert build_actions(settings) is None
    broken = "policy:\n  exploration: 1.5\nactions:\n  - id: nothing\n"
    (tmp_path / "actions.yaml").write_text(broken)
    with pytest.raises(RulesFileError, match=r"actions.yaml:2:\d+: `policy.exploration`"):
        build_actions(settings)


def counted(metrics: FlowMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name.startswith("pulse_flow_nba") and s.name.endswith("_total")
    }


def test_the_metrics_count_decisions_outcomes_and_rewards_per_action() -> None:
    metrics = FlowMetrics()
    the_book = book(window="1h")
    policy = NextBestAction(the_book)
    effects = policy.handle([context("a", T0, "a1"), signal("a", T0 + 1, 1.0)])
    metrics.nba(effects)  # off: nothing counted
    assert counted(metrics) == {}
    metrics.enabled = True
    metrics.nba(effects)
    samples = counted(metrics)
    decision, outcome = effects
    assert isinstance(decision, Decision) and isinstance(outcome, Outcome)
    how = "explored" if decision.explored else "model"
    assert (
        samples[("pulse_flow_nba_decisions_total", (("action", decision.action), ("how", how)))]
        == 1
    )
    group = (("action", decision.action), ("group", "policy"))
    assert (
        samples[("pulse_flow_nba_outcomes_total", (*group[:1], group[1], ("reason", "converted")))]
        == 1
    )
    assert samples[("pulse_flow_nba_reward_total", group)] == outcome.reward
