"""Bounded maps of decayed weights (engine/recs/bounded.py): the memory bound of
every item's relations, and what the space-saving scheme promises within it."""

from __future__ import annotations

import math

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.popularity import log_term
from engine.recs.bounded import DecayedTop, keep_heaviest, relative, top

T0 = 1_300_000_000.0
TAU = 30 * 86400.0

keys = st.sampled_from([f"k{i}" for i in range(40)])
times = st.floats(min_value=T0, max_value=T0 + 200 * 86400.0)
weights = st.sampled_from([0.25, 1.0, 2.0, 5.0])
events = st.lists(st.tuples(keys, weights, times), min_size=1, max_size=120)
capacities = st.integers(min_value=1, max_value=16)


def fill(stream: list[tuple[str, float, float]], capacity: int) -> DecayedTop:
    out = DecayedTop()
    for key, weight, ts in stream:
        out.add(key, log_term(weight, ts, TAU), capacity)
    return out


def true_weights(stream: list[tuple[str, float, float]]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for key, weight, ts in stream:
        out.setdefault(key, []).append(log_term(weight, ts, TAU))
    return {k: _logsumexp(v) for k, v in out.items()}


def _logsumexp(terms: list[float]) -> float:
    high = max(terms)
    return high + math.log(sum(math.exp(t - high) for t in terms))


@given(events, capacities)
def test_never_holds_more_than_its_capacity(
    stream: list[tuple[str, float, float]], cap: int
) -> None:
    top_map = DecayedTop()
    for key, weight, ts in stream:
        top_map.add(key, log_term(weight, ts, TAU), cap)
        assert len(top_map.weights) <= cap


@given(st.lists(st.tuples(st.lists(keys, max_size=12), weights, times), max_size=40), capacities)
def test_add_all_never_holds_more_than_its_capacity(
    stream: list[tuple[list[str], float, float]], cap: int
) -> None:
    top_map = DecayedTop()
    for batch, weight, ts in stream:
        top_map.add_all(batch, log_term(weight, ts, TAU), cap)
        assert len(top_map.weights) <= cap


@given(events)
def test_exact_while_it_has_room(stream: list[tuple[str, float, float]]) -> None:
    truth = true_weights(stream)
    got = fill(stream, capacity=len(truth))
    assert got.floor == -math.inf
    assert got.weights.keys() == truth.keys()
    for key, weight in truth.items():
        assert math.isclose(got.weights[key], weight, rel_tol=1e-12)


@given(events, capacities)
def test_never_under_counts(stream: list[tuple[str, float, float]], cap: int) -> None:
    """A kept weight is at least the key's true decayed weight (space-saving's promise)."""
    truth = true_weights(stream)
    got = fill(stream, cap)
    for key, weight in got.weights.items():
        assert weight >= truth[key] - 1e-9 * abs(truth[key])


@given(events, capacities)
def test_over_count_is_bounded_by_the_floor(
    stream: list[tuple[str, float, float]], cap: int
) -> None:
    truth = true_weights(stream)
    got = fill(stream, cap)
    for key, weight in got.weights.items():
        bound = _logsumexp([truth[key], got.floor]) if got.floor > -math.inf else truth[key]
        assert weight <= bound + 1e-9 * abs(bound)


@given(events, capacities)
def test_same_stream_same_map_and_snapshots_change_nothing(
    stream: list[tuple[str, float, float]], cap: int
) -> None:
    straight = fill(stream, cap)
    half = len(stream) // 2
    first = fill(stream[:half], cap)
    restored = msgspec.msgpack.decode(msgspec.msgpack.encode(first), type=DecayedTop)
    for key, weight, ts in stream[half:]:
        restored.add(key, log_term(weight, ts, TAU), cap)
    assert msgspec.msgpack.encode(restored) == msgspec.msgpack.encode(straight)


@given(st.lists(st.tuples(keys, weights), min_size=1, max_size=30), times, st.floats(1.0, 1e7))
def test_a_later_term_never_lowers_a_weight_and_later_outranks_earlier(
    stream: list[tuple[str, float]], ts: float, later_by: float
) -> None:
    """Decay is monotone: a newer occurrence of the same weight counts more."""
    got = DecayedTop()
    for key, weight in stream:
        got.add(key, log_term(weight, ts, TAU), 100)
    before = dict(got.weights)
    got.add("new-early", log_term(1.0, ts, TAU), 100)
    got.add("new-late", log_term(1.0, ts + later_by, TAU), 100)
    for key, weight in before.items():
        assert got.weights[key] >= weight
    assert got.weights["new-late"] > got.weights["new-early"]


def test_a_key_that_keeps_coming_back_stays_while_one_offs_churn() -> None:
    got = DecayedTop()
    ts = T0
    for i in range(500):
        ts += 60.0
        got.add(f"once-{i}", log_term(1.0, ts, TAU), 8)
        if i % 3 == 0:
            got.add("regular", log_term(1.0, ts, TAU), 8)
    assert "regular" in got.weights
    assert got.top(1)[0][0] == "regular"


@given(st.dictionaries(keys, st.floats(-50, 50), max_size=30), st.integers(0, 35))
def test_keep_heaviest_keeps_exactly_the_heaviest(values: dict[str, float], keep: int) -> None:
    kept, dropped = keep_heaviest(values, keep)
    assert len(kept) == min(keep, len(values))
    assert all(values[k] == v for k, v in kept.items())
    left_out = [v for k, v in values.items() if k not in kept]
    if left_out:
        assert dropped == max(left_out)
        assert min(kept.values(), default=math.inf) >= dropped
    else:
        assert dropped == -math.inf


@given(st.dictionaries(keys, st.floats(-50, 50), max_size=30), st.integers(0, 12), st.sets(keys))
def test_top_respects_k_exclusions_and_order(
    values: dict[str, float], k: int, exclude: set[str]
) -> None:
    got = top(values, k, exclude)
    assert len(got) == min(k, len(set(values) - exclude))
    assert not {key for key, _ in got} & exclude
    assert got == sorted(got, key=lambda kv: (-kv[1], kv[0]))


@settings(max_examples=50)
@given(st.lists(st.tuples(keys, st.floats(-700, 700)), min_size=1, max_size=20))
def test_relative_shares_are_in_zero_one_with_one_for_the_heaviest(
    entries: list[tuple[str, float]],
) -> None:
    shares = relative(entries)
    assert [k for k, _ in shares] == [k for k, _ in entries]
    assert max(s for _, s in shares) == 1.0
    assert all(0.0 <= s <= 1.0 for _, s in shares)
