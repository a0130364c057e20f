"""Delayed labels: no label before its window closes, bounded memory, determinism, recovery."""

from __future__ import annotations

import heapq
import itertools
import pickle
from dataclasses import dataclass, field
from datetime import UTC, datetime

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given, settings

from engine import events as ev
from engine.customer import Engine
from engine.profile import CustomerState
from engine.scores import (
    CHURN,
    CLV,
    PROPENSITY,
    CustomerScores,
    Example,
    ScoreModels,
    Scorer,
    ScoreSettings,
    decode_scores,
    encode_scores,
)

DAY = 86400.0
T0 = 1_700_000_000.0
SETTINGS = ScoreSettings(propensity_days=7, churn_days=30, clv_days=60, max_idle_days=120)


def order(customer: str, day: float, total: float = 20.0, n: int = 0) -> ev.OrderPlaced:
    return ev.OrderPlaced(
        event_id=f"o{n}-{day}",
        customer_id=customer,
        timestamp=datetime.fromtimestamp(T0 + day * DAY, tz=UTC),
        order_id=f"o{n}-{day}",
        total=total,
    )


def view(customer: str, day: float, n: int = 0) -> ev.ProductView:
    return ev.ProductView(
        event_id=f"v{n}-{day}",
        customer_id=customer,
        timestamp=datetime.fromtimestamp(T0 + day * DAY, tz=UTC),
        sku="sku-1",
        category="mugs",
    )


def refund(customer: str, day: float, amount: float, n: int = 0) -> ev.OrderRefunded:
    return ev.OrderRefunded(
        event_id=f"r{n}-{day}",
        customer_id=customer,
        timestamp=datetime.fromtimestamp(T0 + day * DAY, tz=UTC),
        order_id=f"gone{n}",
        amount=amount,
    )


@dataclass
class Replay:
    """What the dataflow does, in one process: events in time order, and each
    customer's wake-up fired when the stream passes it."""

    scorer: Scorer
    engine: Engine = field(default_factory=Engine)
    states: dict[str, CustomerState] = field(default_factory=dict)
    scores: dict[str, CustomerScores] = field(default_factory=dict)
    wakeups: list[tuple[float, str]] = field(default_factory=list)
    emitted: list[tuple[float, Example]] = field(default_factory=list)  # (stream time, example)
    max_pending: dict[int, int] = field(default_factory=dict)

    def fire_until(self, until: float) -> None:
        while self.wakeups and self.wakeups[0][0] < until:
            due, customer = heapq.heappop(self.wakeups)
            if Scorer.next_due(self.scores.get(customer)) != due:
                continue
            for example in self.scorer.fire_due(
                self.scores.get(customer), self.states[customer], due
            ):
                self.emitted.append((due, example))
            self.watch(customer)

    def watch(self, customer: str) -> None:
        scores = self.scores.get(customer)
        if scores is not None:
            for task in (PROPENSITY, CHURN, CLV):
                n = sum(1 for p in scores.pending if p.task == task)
                self.max_pending[task] = max(self.max_pending.get(task, 0), n)
        due = Scorer.next_due(scores)
        if due is not None:
            heapq.heappush(self.wakeups, (due, customer))

    def event(self, event: ev.BaseEvent) -> None:
        ts = event.ts
        self.fire_until(ts)
        key = event.customer_key
        for example in self.scorer.fire_due(self.scores.get(key), self.states.get(key), ts):
            self.emitted.append((ts, example))
        state, _ = self.engine.apply(self.states.get(key), event)
        self.states[key] = state
        scores, examples = self.scorer.on_event(self.scores.get(key), state, event)
        self.scores[key] = scores
        self.emitted.extend((ts, e) for e in examples)
        self.watch(key)

    def run(self, events: list[ev.BaseEvent], until: float | None = None) -> Replay:
        for event in events:
            self.event(event)
        if until is not None:
            self.fire_until(until)
        return self


def test_an_order_within_seven_days_is_a_positive_learned_when_the_window_closes() -> None:
    r = Replay(Scorer(SETTINGS)).run([order("c", 0), order("c", 5, n=1)], until=T0 + 6.9 * DAY)
    assert r.emitted == []  # decided by the order on day 5, learned on day 7
    r.fire_until(T0 + 31 * DAY)
    [(when, example)] = [(t, e) for t, e in r.emitted if e.task == PROPENSITY and e.at == T0]
    assert example.y == 1.0 and example.resolved_at == when == T0 + 7 * DAY
    [churn] = [e for _, e in r.emitted if e.task == CHURN]
    assert churn.y == 0.0 and churn.resolved_at == T0 + 30 * DAY  # bought again: not churned


def test_no_order_is_a_negative_only_once_the_window_has_closed() -> None:
    r = Replay(Scorer(SETTINGS)).run([order("c", 0)], until=T0 + 6.9 * DAY)
    assert r.emitted == []  # nothing known before day 7
    r.fire_until(T0 + 7.1 * DAY)
    [(when, example)] = r.emitted
    assert (example.task, example.y, when) == (PROPENSITY, 0.0, T0 + 7 * DAY)


def test_churn_is_labelled_at_the_horizon_and_clv_counts_net_spend_in_the_window() -> None:
    events: list[ev.BaseEvent] = [order("c", 0, 50.0), view("c", 3)]
    r = Replay(Scorer(SETTINGS)).run(events, until=T0 + 61 * DAY)
    churn = [e for _, e in r.emitted if e.task == CHURN and e.at == T0]
    assert [(e.y, e.resolved_at) for e in churn] == [(1.0, T0 + 30 * DAY)]
    r2 = Replay(Scorer(SETTINGS)).run(
        [order("c", 0, 50.0), order("c", 10, 30.0, n=1), refund("c", 20, 5.0), order("c", 70, 9.0)]
    )
    clv = [e for _, e in r2.emitted if e.task == CLV and e.at == T0]
    # The first order's snapshot is taken after it: 30 - 5 within 60 days; day 70 is outside.
    assert [(e.y, e.resolved_at) for e in clv] == [(25.0, T0 + 60 * DAY)]


def test_a_quiet_customer_is_rescored_by_timer_ever_less_often_then_no_more() -> None:
    r = Replay(Scorer(SETTINGS)).run([order("c", 0)], until=T0 + 400 * DAY)
    timer_snapshots = sorted({e.at for _, e in r.emitted if not e.at_event})
    gaps = [b - a for a, b in itertools.pairwise(timer_snapshots)]
    assert gaps == sorted(gaps)  # spacing grows with the time gone quiet
    assert max(timer_snapshots) - T0 <= 120 * DAY  # max_idle_days
    assert r.scores["c"].pending == [] or all(p.at - T0 <= 120 * DAY for p in r.scores["c"].pending)
    # The served churn risk was refreshed by the timers, as of their time.
    assert r.scores["c"].scored_at > T0


def test_served_scores_and_view() -> None:
    scorer = Scorer(SETTINGS)
    r = Replay(scorer).run([order("c", 0), view("c", 1)])
    scores = r.scores["c"]
    assert scores.scored_at == T0 + DAY
    view_ = scorer.view(scores)
    assert 0.0 < view_.purchase_propensity < 1.0 and 0.0 < view_.churn_risk < 1.0
    assert view_.predicted_clv >= 0.0 and view_.churn_days == 30.0
    assert len(scores.pending) == 3  # one snapshot per score


# ------------------------------------------------------------------ properties

Step = tuple[str, float, str, float]  # customer, day, kind, amount


@st.composite
def streams(draw: st.DrawFn) -> list[ev.BaseEvent]:
    steps: list[Step] = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "c"]),
                st.floats(0, 200).map(lambda d: round(d * 4) / 4),  # ties happen
                st.sampled_from(["order", "order", "view", "refund"]),
                st.floats(0, 500).map(lambda x: round(x, 2)),
            ),
            max_size=40,
        )
    )
    # One event per customer and time: a snapshot taken at an event then
    # follows exactly that event (ties between customers stay).
    steps = sorted({(c, d): (c, d, k, a) for c, d, k, a in steps}.values(), key=lambda s: s[1])
    out: list[ev.BaseEvent] = []
    for n, (customer, day, kind, amount) in enumerate(steps):
        if kind == "order":
            out.append(order(customer, day, amount, n))
        elif kind == "view":
            out.append(view(customer, day, n))
        else:
            out.append(refund(customer, day, amount, n))
    return out


scorer_settings = st.builds(
    ScoreSettings,
    propensity_days=st.sampled_from([1.0, 7.0]),
    churn_days=st.sampled_from([10.0, 30.0]),
    clv_days=st.sampled_from([20.0, 60.0]),
    clv_pending=st.integers(1, 3),
    max_idle_days=st.sampled_from([30.0, 365.0]),
    idle_spacing=st.sampled_from([0.0, 1.0]),
)


@given(streams(), scorer_settings)
@settings(max_examples=60, deadline=None)
def test_no_label_before_its_window_closes_and_each_is_right(
    events: list[ev.BaseEvent], config: ScoreSettings
) -> None:
    r = Replay(Scorer(config)).run(events, until=T0 + 1000 * DAY)
    orders = [(e.customer_key, e.ts, e) for e in events if isinstance(e, ev.OrderPlaced)]
    for when, example in r.emitted:
        horizon = config.horizon_s(example.task)
        due = example.at + horizon
        assert when >= example.resolved_at >= example.at
        # A snapshot taken at an event comes after it; one taken at a timer
        # comes before an event at the same time.
        mine = [
            (ts, o)
            for c, ts, o in orders
            if c == example.customer_id
            and (example.at < ts if example.at_event else example.at <= ts)
            and ts < due
        ]
        assert example.resolved_at == due  # learned when the window closes, never before
        if example.task != CLV:
            ordered = bool(mine)
            expected = float(ordered) if example.task == PROPENSITY else float(not ordered)
            assert example.y == expected


@given(streams(), scorer_settings)
@settings(max_examples=40, deadline=None)
def test_pending_snapshots_stay_bounded(events: list[ev.BaseEvent], config: ScoreSettings) -> None:
    r = Replay(Scorer(config)).run(events, until=T0 + 1000 * DAY)
    assert r.max_pending.get(PROPENSITY, 0) <= 1
    assert r.max_pending.get(CHURN, 0) <= 1
    assert r.max_pending.get(CLV, 0) <= config.clv_pending


@given(streams())
@settings(max_examples=25, deadline=None)
def test_the_same_events_give_the_same_labels_scores_and_models(
    events: list[ev.BaseEvent],
) -> None:
    runs = [Replay(Scorer(SETTINGS)).run(events, until=T0 + 1000 * DAY) for _ in range(2)]
    encode = msgspec.msgpack.encode
    assert encode([e for _, e in runs[0].emitted]) == encode([e for _, e in runs[1].emitted])
    assert encode(runs[0].scores) == encode(runs[1].scores)
    first, second = (r.scorer.models for r in runs)
    assert pickle.dumps(first) == pickle.dumps(second)


@given(streams(), st.integers(0, 40))
@settings(max_examples=25, deadline=None)
def test_a_restart_from_snapshots_continues_exactly(events: list[ev.BaseEvent], cut: int) -> None:
    whole = Replay(Scorer(SETTINGS)).run(events, until=T0 + 1000 * DAY)
    first = Replay(Scorer(SETTINGS)).run(events[:cut])
    # What a recovery snapshot keeps: per-customer scores (MessagePack), the
    # worker's models (pickled), the profile states and the wake-ups.
    restored = Replay(
        Scorer(SETTINGS, pickle.loads(pickle.dumps(first.scorer.models))),
        states=first.states,
        scores={k: decode_scores(encode_scores(v)) for k, v in first.scores.items()},
        wakeups=list(first.wakeups),
        emitted=list(first.emitted),
    )
    restored.engine = first.engine
    restored.run(events[cut:], until=T0 + 1000 * DAY)
    encode = msgspec.msgpack.encode
    assert encode([e for _, e in restored.emitted]) == encode([e for _, e in whole.emitted])


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="churn_days"):
        ScoreSettings(churn_days=0)
    with pytest.raises(ValueError, match="clv_pending"):
        ScoreSettings(clv_pending=0)


def test_learn_false_leaves_the_models_to_a_learner_elsewhere() -> None:
    models = ScoreModels.river(SETTINGS)
    r = Replay(Scorer(SETTINGS, models, learn=False)).run(
        [order("c", 0), order("c", 3, n=1)], until=T0 + 100 * DAY
    )
    assert r.emitted and all(m.examples == 0 for m in models.by_task())
