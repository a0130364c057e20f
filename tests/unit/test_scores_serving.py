"""The score models' learner and server (engine/scores/serving.py): pure."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.scores.features import FEATURES
from engine.scores.labels import CHURN, PROPENSITY, Example, ScoreSettings
from engine.scores.serving import (
    Averaged,
    ScoreLearner,
    ScoreServer,
    TaskQuality,
    decode_features,
    decode_published,
    encode_features,
    encode_published,
)

N = len(FEATURES)


def examples(n: int, seed: int = 1) -> list[Example]:
    """Customers who ordered have feature 0 high; the others low."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = float(rng.random() < 0.3)
        x = tuple(
            (2.0 if y else 0.0) + rng.gauss(0, 0.5) if j == 0 else rng.random() for j in range(N)
        )
        out.append(Example(PROPENSITY, f"c{i}", 1000.0 + i, 2000.0 + i, x, y, 0.0, True))
    return out


def test_the_learner_tests_then_trains_and_the_server_scores_with_what_it_learned() -> None:
    learner = ScoreLearner(ScoreSettings())
    assert learner.learn(examples(3000)) == 3000
    quality = learner.quality[PROPENSITY]
    assert quality.examples == 3000 and quality.positives > 500
    assert quality.auc is not None and quality.auc > 0.9
    assert quality.log_loss is not None and quality.log_loss < 0.5
    assert learner.quality[CHURN].examples == 0
    server = ScoreServer(decode_published(encode_published(learner.published())))
    buyer = (2.0,) + (0.5,) * (N - 1)
    browser = (0.0,) + (0.5,) * (N - 1)
    assert server.predict(PROPENSITY, buyer) > 0.8 > 0.2 > server.predict(PROPENSITY, browser)
    assert server.predict(CHURN, buyer) == 0.5  # nothing learned: the untrained answer
    served = server.score(buyer, 123.0)
    assert served.examples == 3000 and served.scored_at == 123.0


def test_a_restored_learner_carries_on_exactly() -> None:
    data = examples(1000)
    whole = ScoreLearner(ScoreSettings())
    whole.learn(data[:500])
    whole.learn(data[500:])
    half = ScoreLearner(ScoreSettings())
    half.learn(data[:500])
    resumed = ScoreLearner(ScoreSettings(), decode_published(encode_published(half.published())))
    resumed.learn(data[500:])
    assert encode_published(resumed.published()) == encode_published(whole.published())


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(40)))
def test_the_order_within_a_batch_does_not_matter(order: list[int]) -> None:
    data = examples(40, seed=3)
    a, b = ScoreLearner(ScoreSettings()), ScoreLearner(ScoreSettings())
    a.learn(data)
    b.learn([data[i] for i in order])
    assert encode_published(a.published()) == encode_published(b.published())


def test_auc_counts_ties_half_and_orders_the_bins() -> None:
    q = TaskQuality()
    for score, y in [(0.9, 1.0), (0.8, 1.0), (0.2, 0.0), (0.1, 0.0)]:
        q.add(True, score, y)
    assert q.auc == 1.0
    tied = TaskQuality()
    for y in (1.0, 0.0):
        tied.add(True, 0.5, y)
    assert tied.auc == 0.5
    assert TaskQuality().auc is None and TaskQuality().log_loss is None


def test_amount_quality_is_mean_absolute_error() -> None:
    q = TaskQuality()
    q.add(False, 10.0, 4.0)
    q.add(False, 0.0, 2.0)
    assert q.mae == pytest.approx(4.0) and q.auc is None and q.log_loss is None


def test_the_average_is_the_mean_first_then_exponential() -> None:
    avg = Averaged()
    avg.add((1.0, 0.0), 1.0)
    avg.add((3.0, 2.0), 3.0)
    assert avg.coef == (2.0, 1.0) and avg.bias == 2.0
    assert avg.raw((1.0, 1.0)) == 5.0


def test_features_round_trip_with_their_time() -> None:
    x = tuple(float(i) / 7 for i in range(N))
    assert decode_features(encode_features(12.5, x)) == (12.5, x)
