"""The ScoreModel contract, run against every implementation; River equivalence; merging."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given, settings

from engine.scores import FEATURES, LinearScore, RfmRate, RunRateSpend, ScoreModel, merge
from engine.scores.bayes import BayesScore, BayesState
from engine.scores.features import Features
from engine.scores.models import P_MAX, P_MIN
from engine.scores.spend import SpendScore

IMPLEMENTATIONS: dict[str, Callable[[], ScoreModel]] = {
    "linear probability": lambda: LinearScore("p", "probability"),
    "linear amount": lambda: LinearScore("a", "amount", lr=0.01, clip_gradient=1.0),
    "spend (run rate x correction)": lambda: SpendScore("clv", 90.0),
    "bayes probability": lambda: BayesScore("p", "probability"),
    "bayes amount": lambda: BayesScore("a", "amount"),
    "spend (run rate x bayes correction)": lambda: SpendScore(
        "clv", 90.0, correction=BayesScore("clv", "amount")
    ),
    "rfm rate": lambda: RfmRate("p"),
    "run rate": lambda: RunRateSpend("clv", 90.0),
}


def sample(rng: random.Random) -> Features:
    """A plausible feature vector: flags 0/1, log-scaled counts, bounded ratios."""
    ordered = rng.random() < 0.7
    return tuple(
        float(ordered) if name in ("has_ordered", "cart_open") else rng.uniform(0, 6)
        for name in FEATURES
    )


def examples(kind: str, n: int, seed: int = 1) -> list[tuple[Features, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = sample(rng)
        signal = x[FEATURES.index("log_orders_90d")] - x[FEATURES.index("log_days_since_order")]
        if kind == "probability":
            y = 1.0 if rng.random() < 1 / (1 + math.exp(-signal)) else 0.0
        else:
            y = max(0.0, 50.0 * math.exp(signal / 3) + rng.gauss(0, 5))
        out.append((x, y))
    return out


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest) -> Callable[[], ScoreModel]:
    return IMPLEMENTATIONS[request.param]


def test_speaks_the_protocol(make: Callable[[], ScoreModel]) -> None:
    model = make()
    assert isinstance(model, ScoreModel)
    assert model.kind in ("probability", "amount") and model.name


def test_answers_in_range_before_and_after_learning(make: Callable[[], ScoreModel]) -> None:
    model = make()
    data = examples(model.kind, 300)
    zero = (0.0,) * len(FEATURES)
    for x in (zero, data[0][0]):
        _check_range(model, model.predict(x))
    for x, y in data:
        before = model.examples
        model.learn(x, y)
        assert model.examples == before + 1
        _check_range(model, model.predict(x))
    model.learn(zero, 0.0)  # a customer with nothing yet
    _check_range(model, model.predict(zero))


def test_is_deterministic_and_survives_pickling(make: Callable[[], ScoreModel]) -> None:
    a, b = make(), make()
    data = examples(a.kind, 200)
    for x, y in data:
        a.learn(x, y)
        b.learn(x, y)
    restored = pickle.loads(pickle.dumps(a))
    for x, _ in data[:20]:
        assert a.predict(x) == b.predict(x) == restored.predict(x)


def test_learns_something_from_a_clear_signal(make: Callable[[], ScoreModel]) -> None:
    model, untrained = make(), make()
    if isinstance(model, RunRateSpend):
        pytest.skip("the run rate learns nothing by design")
    train, test = examples(model.kind, 2000, seed=2), examples(model.kind, 400, seed=3)
    for x, y in train:
        model.learn(x, y)
    if model.kind == "probability":
        loss = -sum(
            math.log(model.predict(x)) if y else math.log(1 - model.predict(x)) for x, y in test
        ) / len(test)
        assert loss < math.log(2)  # better than a coin
    else:
        mae = sum(abs(model.predict(x) - y) for x, y in test) / len(test)
        assert mae < sum(abs(untrained.predict(x) - y) for x, y in test) / len(test)


def _check_range(model: ScoreModel, value: float) -> None:
    assert math.isfinite(value)
    if model.kind == "probability":
        assert P_MIN <= value <= P_MAX
    else:
        assert value >= 0.0


# ------------------------------------------------------------------ River underneath


@pytest.mark.parametrize("kind", ["probability", "amount"])
def test_the_fast_path_answers_what_river_answers(kind: str) -> None:
    model = LinearScore("m", kind, clip_gradient=1.0)  # type: ignore[arg-type]
    data = examples(kind, 500)
    for n, (x, y) in enumerate(data):
        if n % 50 == 0:
            assert model.predict(x) == pytest.approx(model.river_predict(x), rel=1e-9, abs=1e-12)
        model.learn(x, y)
    for x, _ in data[:50]:
        assert model.predict(x) == pytest.approx(model.river_predict(x), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kind", ["probability", "amount"])
def test_state_round_trips_through_bytes(kind: str) -> None:
    model = LinearScore("m", kind, clip_gradient=1.0)  # type: ignore[arg-type]
    data = examples(kind, 300)
    for x, y in data[:200]:
        model.learn(x, y)
    copy = LinearScore.from_bytes("m", model.to_bytes())
    for x, _ in data[200:220]:
        assert copy.predict(x) == pytest.approx(model.predict(x), rel=1e-12)
    for x, y in data[200:]:  # and both go on learning alike
        model.learn(x, y)
        copy.learn(x, y)
    assert copy.to_bytes() == model.to_bytes()


def test_a_model_of_other_features_is_refused() -> None:
    state = LinearScore("m", "probability").state()
    from msgspec.structs import replace

    with pytest.raises(ValueError, match="other features"):
        LinearScore.from_state("m", replace(state, features=("a",)))


@given(st.integers(1, 300), st.integers(1, 300), st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_merge_averages_the_parts_log_odds_by_their_examples(n_a: int, n_b: int, seed: int) -> None:
    data = examples("probability", n_a + n_b, seed)
    a, b = LinearScore("m", "probability"), LinearScore("m", "probability")
    for x, y in data[:n_a]:
        a.learn(x, y)
    for x, y in data[n_a:]:
        b.learn(x, y)
    merged = LinearScore.from_state("m", merge([a.state(), b.state()]))
    assert merged.examples == n_a + n_b
    for x, _ in examples("probability", 10, seed + 1):
        expected = (n_a * a.raw(x) + n_b * b.raw(x)) / (n_a + n_b)
        assert merged.raw(x) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_merging_one_model_changes_nothing_and_scalers_merge_exactly() -> None:
    data = examples("probability", 400)
    whole, a, b = (LinearScore("m", "probability") for _ in range(3))
    for n, (x, y) in enumerate(data):
        whole.learn(x, y)
        (a if n % 2 else b).learn(x, y)
    alone = merge([whole.state()])
    assert alone == whole.state()
    merged = merge([a.state(), b.state()])
    for name in FEATURES:
        assert merged.counts[name] == whole.state().counts[name]
        assert merged.means[name] == pytest.approx(whole.state().means[name], rel=1e-9)
        assert merged.variances[name] == pytest.approx(whole.state().variances[name], rel=1e-9)
    with pytest.raises(ValueError):
        merge([])


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["probability", "amount"]), st.randoms(use_true_random=False))
def test_bayes_learns_the_same_model_whatever_the_order(kind: str, rng: random.Random) -> None:
    """Its state is two sums: another order changes the rounding, nothing else."""
    data = examples(kind, 300, seed=5)
    a, b = BayesScore("m", kind), BayesScore("m", kind)  # type: ignore[arg-type]
    for x, y in data:
        a.learn(x, y)
    shuffled = list(data)
    rng.shuffle(shuffled)
    for x, y in shuffled:
        b.learn(x, y)
    for ca, cb in zip(a.coefficients(), b.coefficients(), strict=True):
        assert math.isclose(ca, cb, rel_tol=1e-9, abs_tol=1e-12)


def test_bayes_state_restores_the_same_model() -> None:
    data = examples("probability", 200, seed=2)
    model = BayesScore("p", "probability")
    for x, y in data[:150]:
        model.learn(x, y)
    raw = msgspec.msgpack.encode(model.state())
    restored = BayesScore.from_state("p", msgspec.msgpack.decode(raw, type=BayesState))
    for x, y in data[150:]:
        model.learn(x, y)
        restored.learn(x, y)
    assert restored.coefficients() == model.coefficients()
    assert restored.examples == model.examples == 200
