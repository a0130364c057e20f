"""Item-to-item relations and the pair signals a customer's events give
(engine/recs/relations.py, engine/recs/shopper.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import events as ev
from engine.recs.config import RecsConfig
from engine.recs.relations import (
    BOUGHT_TOGETHER,
    CO_VIEWED,
    VIEWED_BOUGHT,
    ItemRelations,
    PairSignal,
    apply_pair,
    decode_similar,
    encode_similar,
    similar_items,
)
from engine.recs.shopper import ShopperItems, remember

T0 = 1_700_000_000.0
SMALL = RecsConfig(neighbours_kept=8, neighbours_served=5, bought_kept=6, recent_kept=4)


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def view(sku: str, ts: float, category: str | None = None, n: int = 0) -> ev.ProductView:
    return ev.ProductView(
        event_id=f"v{n}-{sku}-{ts}", customer_id="c1", timestamp=at(ts), sku=sku, category=category
    )


def order(skus: list[str], ts: float, category: str | None = "mugs") -> ev.OrderPlaced:
    items = tuple(ev.LineItem(sku=s, price=1.0, category=category) for s in skus)
    return ev.OrderPlaced(
        event_id=f"o-{ts}",
        customer_id="c1",
        timestamp=at(ts),
        order_id=f"o{ts}",
        total=1.0,
        items=items,
    )


def learn(events: list[ev.BaseEvent], config: RecsConfig = SMALL) -> dict[str, ItemRelations]:
    items = ShopperItems()
    relations: dict[str, ItemRelations] = {}
    for event in events:
        for signal in remember(items, event, config):
            relations[signal.sku] = apply_pair(relations.get(signal.sku), signal, config)
    return relations


# What events say ------------------------------------------------------------------


def test_views_close_together_are_co_viewed_both_ways() -> None:
    items = ShopperItems()
    assert remember(items, view("a", T0, "mugs")) == []
    signals = remember(items, view("b", T0 + 60, "cups"))
    assert PairSignal("b", CO_VIEWED, 1.0, T0 + 60, ("a",), ("mugs",)) in signals
    assert PairSignal("a", CO_VIEWED, 1.0, T0 + 60, ("b",), ("cups",)) in signals


def test_views_far_apart_or_of_the_same_item_are_not_pairs() -> None:
    items = ShopperItems()
    remember(items, view("a", T0))
    assert remember(items, view("b", T0 + 2 * 3600)) == []
    assert remember(items, view("b", T0 + 2 * 3600 + 5)) == []


def test_a_view_pairs_with_at_most_co_view_partners_earlier_views() -> None:
    items = ShopperItems()
    config = RecsConfig(co_view_partners=3)
    for i in range(6):
        remember(items, view(f"s{i}", T0 + i), config)
    signals = remember(items, view("new", T0 + 10), config)
    [own] = [s for s in signals if s.sku == "new"]
    assert own.others == ("s5", "s4", "s3")  # the latest first
    assert len(signals) == 4


def test_an_order_pairs_its_items_and_what_was_viewed_before_it() -> None:
    items = ShopperItems()
    remember(items, view("browsed", T0, "mugs"))
    signals = remember(items, order(["a", "b", "c"], T0 + 3600))
    together = {s.sku: s.others for s in signals if s.kind == BOUGHT_TOGETHER}
    assert together == {"a": ("b", "c"), "b": ("c", "a"), "c": ("a", "b")}
    [led] = [s for s in signals if s.kind == VIEWED_BOUGHT]
    assert (led.sku, led.others) == ("browsed", ("a", "b", "c"))
    assert set(items.bought) == {"a", "b", "c"}


def test_a_large_order_is_linear_in_its_size() -> None:
    skus = [f"s{i}" for i in range(200)]
    signals = remember(ShopperItems(), order(skus, T0), RecsConfig(basket_partners=7))
    assert len(signals) == 200
    assert all(len(s.others) == 7 for s in signals)


def test_bought_items_are_bounded_and_the_habitual_stay() -> None:
    items = ShopperItems()
    for i in range(30):
        remember(items, order(["staple", f"once-{i}"], T0 + i * 86400.0), SMALL)
        assert len(items.bought) <= SMALL.bought_kept
    assert items.bought["staple"].orders == 30


def test_viewed_keeps_the_latest_time_per_item_most_recent_first() -> None:
    items = ShopperItems()
    for sku, ts in [("a", T0), ("b", T0 + 1), ("a", T0 + 2), ("c", T0 - 5)]:
        remember(items, view(sku, ts), SMALL)
    assert [(s.sku, s.ts) for s in items.viewed] == [("a", T0 + 2), ("b", T0 + 1), ("c", T0 - 5)]


# Relations --------------------------------------------------------------------------


def test_bought_together_items_become_similar_and_the_item_is_not_its_own() -> None:
    relations = learn([order(["a", "b"], T0), order(["a", "b", "c"], T0 + 86400.0)])
    similar = similar_items(relations["a"], config=SMALL)
    assert [s.sku for s in similar] == ["b", "c"]
    assert similar[0].score == 1.0 and 0.0 < similar[1].score < 1.0
    assert similar[0].category == "mugs"


def test_similar_items_respect_k_and_round_trip_through_redis_bytes() -> None:
    relations = learn([order([f"s{i}" for i in range(12)], T0)])
    similar = similar_items(relations["s0"], k=3, config=SMALL)
    assert len(similar) == 3
    assert decode_similar(encode_similar(similar)) == similar


signal_lists = st.lists(
    st.builds(
        PairSignal,
        sku=st.just("x"),
        kind=st.sampled_from([CO_VIEWED, VIEWED_BOUGHT, BOUGHT_TOGETHER]),
        weight=st.sampled_from([0.3, 1.0]),
        ts=st.floats(T0, T0 + 90 * 86400.0),
        others=st.lists(st.sampled_from([f"o{i}" for i in range(60)]), max_size=10).map(tuple),
        categories=st.just(()),
    ).map(lambda s: msgspec.structs.replace(s, categories=(None,) * len(s.others))),
    max_size=60,
)


@settings(max_examples=60)
@given(signal_lists)
def test_an_items_memory_is_bounded_whatever_it_meets(signals: list[PairSignal]) -> None:
    state = None
    for signal in signals:
        state = apply_pair(state, signal, SMALL)
        for kind in (CO_VIEWED, VIEWED_BOUGHT, BOUGHT_TOGETHER):
            assert len(state.kind(kind).weights) <= SMALL.neighbours_kept
        assert len(state.categories) <= 4 * SMALL.neighbours_kept
    if state is not None:
        similar = similar_items(state, config=SMALL)
        assert len(similar) <= SMALL.neighbours_served
        assert all(0.0 < s.score <= 1.0 for s in similar)
        assert similar == similar_items(state, config=SMALL)
        restored = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=ItemRelations)
        assert restored == state
