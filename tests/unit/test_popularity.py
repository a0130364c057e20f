"""Decayed item popularity, the recommendations fallback.

Scores are stored in log space against a fixed epoch so that each update is an
absolute value and items updated at different times stay comparable. These
tests pin that claim against a direct computation of the decayed sum.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import events as ev
from engine.popularity import DECAY_TAU_S, ItemSignal, ItemState, apply_signal, item_signals

T0 = 1_700_000_000.0


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def signal(
    weight: float,
    ts: float,
    sku: str = "s1",
    name: str | None = None,
    category: str | None = None,
    price: float | None = None,
) -> ItemSignal:
    return ItemSignal(sku, weight, ts, name, category, price)


def score(signals: list[ItemSignal]) -> float:
    state: ItemState | None = None
    for s in signals:
        state = apply_signal(state, s)
    assert state is not None
    return state.log_score


def decayed(signals: list[ItemSignal], reference: float) -> float:
    """The quantity the log score stands for, computed directly at one reference time."""
    return sum(s.weight * math.exp((s.ts - reference) / DECAY_TAU_S) for s in signals)


# item_signals ----------------------------------------------------------------


def test_product_view_is_a_unit_signal_with_its_metadata() -> None:
    event = ev.ProductView(
        event_id="e1",
        customer_id="c1",
        timestamp=at(T0),
        sku="s1",
        name="Boot",
        category="shoes",
        price=80.0,
    )
    assert item_signals(event) == [ItemSignal("s1", 1.0, T0, "Boot", "shoes", 80.0)]


def test_add_to_cart_weighs_more_than_a_view() -> None:
    event = ev.AddToCart(
        event_id="e1",
        customer_id="c1",
        timestamp=at(T0),
        sku="s1",
        price=80.0,
        quantity=4,
        name="Boot",
    )
    [sig] = item_signals(event)
    assert (sig.sku, sig.ts, sig.name, sig.price) == ("s1", T0, "Boot", 80.0)
    assert sig.weight == 3.0, "a cart add counts once, whatever the quantity"


def test_order_placed_gives_one_signal_per_line_weighted_by_quantity() -> None:
    event = ev.OrderPlaced(
        event_id="e1",
        customer_id="c1",
        timestamp=at(T0),
        order_id="o1",
        total=50.0,
        items=(
            ev.LineItem(sku="a", price=10.0, quantity=3, category="socks"),
            ev.LineItem(sku="b", price=20.0, name="Belt"),
        ),
    )
    assert item_signals(event) == [
        ItemSignal("a", 15.0, T0, None, "socks", 10.0),
        ItemSignal("b", 5.0, T0, "Belt", None, 20.0),
    ]


def test_order_without_items_and_other_events_say_nothing() -> None:
    assert (
        item_signals(
            ev.OrderPlaced(
                event_id="e1", customer_id="c1", timestamp=at(T0), order_id="o1", total=1.0
            )
        )
        == []
    )
    assert item_signals(ev.PageView(event_id="e2", customer_id="c1", timestamp=at(T0))) == []
    assert (
        item_signals(ev.RemoveFromCart(event_id="e3", customer_id="c1", timestamp=at(T0), sku="s1"))
        == []
    )


# apply_signal ----------------------------------------------------------------


def test_first_signal_creates_the_item() -> None:
    state = apply_signal(None, signal(3.0, T0, sku="s9", name="Hat", category="hats", price=9.5))
    assert state.sku == "s9"
    assert state.log_score == pytest.approx(math.log(3.0) + T0 / DECAY_TAU_S)
    assert (state.name, state.category, state.price) == ("Hat", "hats", 9.5)


def test_metadata_keeps_the_last_known_value() -> None:
    state = apply_signal(None, signal(1.0, T0, name="Hat", category="hats", price=9.5))
    state = apply_signal(state, signal(1.0, T0 + 1))
    assert (state.name, state.category, state.price) == ("Hat", "hats", 9.5)
    state = apply_signal(state, signal(1.0, T0 + 2, name="Cap", price=0.0))
    assert (state.name, state.category, state.price) == ("Cap", "hats", 0.0)


def test_more_weight_scores_higher_at_the_same_time() -> None:
    assert score([signal(5.0, T0)]) > score([signal(3.0, T0)]) > score([signal(1.0, T0)])


def test_recent_signal_outranks_an_older_one_of_the_same_weight() -> None:
    assert score([signal(1.0, T0 + 3600)]) > score([signal(1.0, T0)])


def test_two_views_outrank_one_view_at_the_same_time() -> None:
    assert score([signal(1.0, T0), signal(1.0, T0)]) > score([signal(1.0, T0)])
    assert score([signal(1.0, T0), signal(1.0, T0)]) == pytest.approx(score([signal(2.0, T0)]))


def test_one_decay_constant_of_age_costs_a_factor_of_e() -> None:
    """Items updated at different times compare as if both were decayed to now."""
    old_heavy = score([signal(math.e * 1.01, T0)])
    new_light = score([signal(1.0, T0 + DECAY_TAU_S)])
    assert old_heavy > new_light
    assert score([signal(math.e * 0.99, T0)]) < new_light


def test_scores_stay_finite_at_realistic_epoch_times() -> None:
    """exp(t / tau) alone overflows near 2024 epochs; the log-space sum must not."""
    signals = [signal(5.0, T0 + i * 60.0) for i in range(1000)]
    assert math.isfinite(score(signals))


timestamps = st.floats(min_value=T0 - 60 * DECAY_TAU_S, max_value=T0 + 60 * DECAY_TAU_S)
weights = st.sampled_from([1.0, 3.0, 5.0, 10.0, 15.0, 500.0])
signal_lists = st.lists(st.builds(signal, weights, timestamps), min_size=1, max_size=20)


@given(signal_lists)
def test_log_score_is_the_log_of_the_decayed_sum(signals: list[ItemSignal]) -> None:
    reference = max(s.ts for s in signals)
    expected = math.log(decayed(signals, reference)) + reference / DECAY_TAU_S
    assert score(signals) == pytest.approx(expected, rel=1e-12, abs=1e-9)


@given(signal_lists, signal_lists, timestamps)
def test_ranking_matches_decayed_popularity_at_any_reference_time(
    a: list[ItemSignal], b: list[ItemSignal], reference: float
) -> None:
    direct_a, direct_b = decayed(a, reference), decayed(b, reference)
    if not math.isfinite(direct_a) or not math.isfinite(direct_b):
        return  # the direct sum overflows far in the past: exactly what log space avoids
    if math.isclose(direct_a, direct_b, rel_tol=1e-9):
        assert score(a) == pytest.approx(score(b), rel=1e-12)
    else:
        assert (score(a) > score(b)) == (direct_a > direct_b)


@given(signal_lists.flatmap(lambda s: st.tuples(st.just(s), st.permutations(s))))
@settings(max_examples=60)
def test_score_does_not_depend_on_application_order(
    pair: tuple[list[ItemSignal], list[ItemSignal]],
) -> None:
    """Items interleave across partitions and replays; order must not matter."""
    original, shuffled = pair
    assert score(shuffled) == pytest.approx(score(original), rel=1e-12, abs=1e-9)


@given(signal_lists, st.builds(signal, weights, timestamps))
def test_a_signal_never_lowers_the_score(signals: list[ItemSignal], extra: ItemSignal) -> None:
    """Near 2024 the score is ~2800, so its float resolution is ~1e-12 relative: a signal
    many decay constants older than the newest one may round away, but never subtracts."""
    before, after = score(signals), score([*signals, extra])
    assert after >= before
    if extra.ts >= max(s.ts for s in signals) - 10 * DECAY_TAU_S:
        assert after > before
