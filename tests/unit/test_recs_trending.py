"""Popular and trending items, overall and per category (engine/recs/trending.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.popularity import ItemSignal
from engine.recs.config import RecsConfig
from engine.recs.trending import Board, ItemTrend, apply_trend, list_names

T0 = 1_700_000_000.0
DAY = 86400.0


def signal(sku: str, ts: float, weight: float = 1.0, category: str | None = "mugs") -> ItemSignal:
    return ItemSignal(sku, weight, ts, None, category, None)


def trend(signals: list[ItemSignal]) -> ItemTrend:
    state = None
    for s in signals:
        state = apply_trend(state, s)
    assert state is not None
    return state


def test_a_recent_burst_trends_before_it_is_popular() -> None:
    steady = trend([signal("steady", T0 + i * DAY) for i in range(14)])
    burst = trend([signal("burst", T0 + 13 * DAY + i * 600.0) for i in range(5)])
    assert burst.trending > steady.trending
    assert steady.popular > burst.popular


def test_items_go_to_the_overall_lists_and_their_categorys() -> None:
    assert list_names("mugs") == ("popular", "trending", "popular:mugs", "trending:mugs")
    assert list_names(None) == ("popular", "trending")
    board = Board()
    board.update(trend([signal("a", T0, 2.0)]))
    board.update(trend([signal("b", T0, 1.0, category="bags")]))
    assert [s.sku for s in board.top("popular", 10)] == ["a", "b"]
    assert [s.sku for s in board.top("popular:bags", 10)] == ["b"]
    top = board.top("popular", 10)
    assert top[0].score == 1.0 and 0.0 < top[1].score < 1.0
    assert top[0].category == "mugs"


def test_an_update_is_absolute_so_writing_it_twice_changes_nothing() -> None:
    board = Board()
    state = trend([signal("a", T0)])
    board.update(state)
    once = dict(board.lists["popular"])
    board.update(state)
    assert board.lists["popular"] == once


@given(st.lists(st.tuples(st.integers(0, 200), st.floats(T0, T0 + 30 * DAY)), max_size=300))
def test_every_list_stays_bounded(updates: list[tuple[int, float]]) -> None:
    config = RecsConfig(board_kept=20)
    board = Board()
    trends: dict[str, ItemTrend] = {}
    for n, ts in updates:
        sku = f"s{n}"
        trends[sku] = apply_trend(trends.get(sku), signal(sku, ts, category=f"c{n % 3}"), config)
        board.update(trends[sku], config)
        assert all(len(scores) <= 20 for scores in board.lists.values())
