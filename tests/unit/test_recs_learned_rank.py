"""The learned rankers of benchmarks/tune_learned.py: the hand score they blend with
is the engine's own, and they learn an order's labels only after ranking for it."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import quality_recs, tune_learned
from benchmarks.prequential import DEFAULT_DATA, DEFAULT_MAPPING, Columns, events, read_rows, replay
from engine import events as ev
from engine.profile import CustomerState

needs_data = pytest.mark.skipif(not DEFAULT_DATA.exists(), reason=f"no {DEFAULT_DATA}")


def _stream(limit: int) -> list[ev.BaseEvent]:
    columns = Columns.load(DEFAULT_MAPPING)
    return list(events(read_rows(DEFAULT_DATA, columns, limit=limit), columns))


@needs_data
def test_the_hand_score_alone_ranks_as_the_engine_does() -> None:
    hand = tune_learned.Learned(name="hand", model_weight=0.0)
    report = quality_recs.RecsReport([quality_recs.PulseRecs(), hand])
    replay(_stream(4000), [report])
    result = report.as_json()["methods"]
    assert report.cases()["returning"] > 30
    assert result["hand"]["returning"] == result["pulse"]["returning"]
    assert hand.trained > 0  # it learnt, with no say in the ranking


class Spy(tune_learned.Learned):
    """Records, for every order learnt, when its ranking was made."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ranked_at: dict[str, float] = {}
        self.learnt: list[tuple[float, float]] = []

    def rank(self, customer: str, state: CustomerState | None, k: int,
             bought: Any, now: float) -> list[str]:  # fmt: skip
        if bought is None:
            self.ranked_at[customer] = now
        return super().rank(customer, state, k, bought, now)

    def learn(self, event: ev.BaseEvent, state: CustomerState) -> None:
        key = event.customer_key
        if isinstance(event, ev.OrderPlaced) and key in self.shown:
            self.learnt.append((self.ranked_at[key], event.ts))
        super().learn(event, state)


@needs_data
def test_an_order_is_learnt_only_after_it_was_ranked_for() -> None:
    spy = Spy(name="spy", kind="bayes", full=False)
    report = quality_recs.RecsReport([spy])
    replay(_stream(3000), [report])
    assert spy.learnt
    assert all(ranked == ordered for ranked, ordered in spy.learnt)
    assert spy.trained > 0
