"""The bounds the policy reads are River's own, and survive a snapshot bit for bit."""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.nba.features import FEATURE_NAMES
from engine.nba.linucb import LinUcb

ARMS = ("a", "b", "c")
vectors = st.lists(st.floats(0, 1), min_size=len(FEATURE_NAMES), max_size=len(FEATURE_NAMES))


def trained(seed: int, rounds: int, noise: float = 0.1) -> LinUcb:
    rng = random.Random(seed)
    model = LinUcb(noise)
    for _ in range(rounds):
        x = [1.0] + [rng.random() for _ in FEATURE_NAMES[1:]]
        model.learn(rng.choice(ARMS), x, float(rng.random() < x[3]))
    return model


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 60), vectors, st.sampled_from((0.05, 0.1, 1.0)))
def test_bounds_are_rivers_upper_confidence_bounds(
    seed: int, rounds: int, x: list[float], noise: float
) -> None:
    model = trained(seed, rounds, noise)
    ours = model.bounds(ARMS, x)
    context = dict(zip(FEATURE_NAMES, x, strict=True))
    for arm, bound in zip(ARMS, ours, strict=True):
        regression: Any = model.policy._bayes_lin_regs[arm]
        dist = regression.predict_one(context, with_dist=True)
        assert bound == pytest.approx(dist.mu + dist.sigma, rel=1e-9, abs=1e-12)


def test_an_unseen_action_has_the_widest_bound() -> None:
    model = trained(1, 300)
    x = [1.0] + [0.5] * (len(FEATURE_NAMES) - 1)
    seen, unseen = model.bounds(("a", "new"), x)
    assert unseen > seen
    assert unseen == pytest.approx(0.0 + math.sqrt(0.1 + sum(v * v for v in x)))


def test_learning_a_reward_raises_the_actions_mean() -> None:
    model = LinUcb(0.1)
    x = [1.0] + [0.0] * (len(FEATURE_NAMES) - 1)
    before = model.bounds(("a", "b"), x)
    for _ in range(50):
        model.learn("a", x, 1.0)
        model.learn("b", x, 0.0)
    after = model.bounds(("a", "b"), x)
    assert after[0] > after[1]
    assert after[1] < before[1]  # b is now known to pay nothing, and known well
    assert model.pulls("a") == 50


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 80), vectors)
def test_a_restored_model_gives_the_same_bounds(seed: int, rounds: int, x: list[float]) -> None:
    model = trained(seed, rounds)
    copy = LinUcb(0.1)
    copy.restore(model.snapshot())
    assert copy.bounds(ARMS, x) == model.bounds(ARMS, x)
    model.learn("a", x, 1.0)
    copy.learn("a", x, 1.0)
    assert copy.bounds(ARMS, x) == model.bounds(ARMS, x)
    assert [copy.pulls(a) for a in ARMS] == [model.pulls(a) for a in ARMS]


def test_arms_learned_on_other_features_start_again() -> None:
    model = trained(3, 100)
    arms = [
        msgspec.structs.replace(arm, features=(*arm.features[:-1], "renamed"))
        for arm in model.snapshot()
    ]
    copy = LinUcb(0.1)
    copy.restore(arms)
    fresh = LinUcb(0.1)
    x = [1.0] * len(FEATURE_NAMES)
    assert copy.bounds(ARMS, x) == fresh.bounds(ARMS, x)
