"""River's LinUCB (``river.bandit.LinUCBDisjoint``): one Bayesian linear
regression of the reward on the context per action, the action with the
highest upper confidence bound (mean + one standard deviation) is the greedy
choice.

River learns (``update``); the bounds are read here from the regressions'
own state, with River's formulas (Bishop 3.58 and 3.59, as in
``BayesianLinearRegression.predict_one``; ``tests/unit/test_nba_linucb.py``
holds the two equal), for three reasons: River's ``pull`` breaks ties with a
random generator whose state a snapshot would have to carry, it does not say
how likely its choice was (the propensity every decision logs), and building
a predictive distribution per action costs about 35 µs where the two dot
products cost a few.

The prior precision stays at River's default of 1: in river 0.26.1 the
regression starts both its precision and its covariance at I / alpha, which
agree only for alpha = 1. How much one reward counts is the noise precision
(``beta`` = 1 / ``reward_noise``).

``snapshot``/``restore`` carry the regressions' arrays as raw float64 bytes
in a msgspec Struct, so a restored policy makes exactly the choices the
running one would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from river import bandit, linear_model, stats

from engine.nba.features import FEATURE_NAMES


class ArmState(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One action's regression and River's reward statistic for it."""

    action: str
    features: tuple[str, ...]  # the regression's feature order
    cap: int
    precision: bytes  # cap x cap float64, C order
    covariance: bytes  # cap x cap float64, stored C order, used Fortran order
    eta: bytes  # cap float64
    pulls: int
    reward_mean: float


class LinUcb:
    """River's ``LinUCBDisjoint`` over the features of ``engine.nba.features``."""

    def __init__(self, reward_noise: float) -> None:
        self.beta = 1.0 / reward_noise
        self.noise_var = reward_noise  # 1 / beta, the predictive variance's floor
        self.policy = bandit.LinUCBDisjoint(alpha=1.0, beta=self.beta)
        self._names = FEATURE_NAMES

    def _regression(self, action: str) -> linear_model.BayesianLinearRegression:
        regressions = self.policy._bayes_lin_regs
        found = regressions.get(action)
        if found is None:
            found = regressions[action]
            # Every feature known from the start: the arrays keep one order
            # and one size, which the bounds below and snapshots rely on. (The
            # mean is then due: River computes it only after a first update.)
            found._ensure_features(self._names)
            found._m_dirty = True
        return found

    def bounds(self, actions: Sequence[str], x: Sequence[float]) -> list[float]:
        """The upper confidence bound of each action for context ``x``."""
        vector = np.asarray(x, dtype=np.float64)
        out = []
        for action in actions:
            reg = self._regression(action)
            cap = reg._cap
            if cap != len(vector):
                padded = np.zeros(cap, dtype=np.float64)
                padded[: len(vector)] = vector
                xa = padded
            else:
                xa = vector
            reg._ensure_m()
            mean = float(reg._m_arr @ xa)
            variance = self.noise_var + float(xa @ reg._ss_inv_arr @ xa)
            out.append(mean + math.sqrt(variance))
        return out

    def learn(self, action: str, x: Sequence[float], reward: float) -> None:
        self._regression(action)
        update: Any = self.policy.update  # (River leaves it unannotated)
        update(action, dict(zip(self._names, x, strict=True)), reward)

    def pulls(self, action: str) -> int:
        return int(self.policy._counts[action])

    def snapshot(self) -> list[ArmState]:
        out = []
        regressions: dict[str, Any] = dict(self.policy._bayes_lin_regs)  # type: ignore[arg-type]
        rewards: dict[str, Any] = dict(self.policy._rewards)  # type: ignore[arg-type]
        for action in sorted(regressions):
            reg = regressions[action]
            mean = rewards.get(action)
            out.append(
                ArmState(
                    action=action,
                    features=tuple(reg._idx),
                    cap=reg._cap,
                    precision=np.ascontiguousarray(reg._ss_arr).tobytes(),
                    covariance=np.ascontiguousarray(reg._ss_inv_arr).tobytes(),
                    eta=reg._eta_arr.tobytes(),
                    pulls=int(self.policy._counts[action]),
                    reward_mean=float(mean.get()) if mean is not None else 0.0,
                )
            )
        return out

    def restore(self, arms: Sequence[ArmState]) -> None:
        """Take over learned state; an action learned on other features starts again."""
        for arm in arms:
            if arm.features != self._names:
                continue
            reg = self._regression(arm.action)
            cap = arm.cap
            reg._cap = cap
            reg._ss_arr = np.frombuffer(arm.precision, dtype=np.float64).reshape(cap, cap).copy()
            reg._ss_inv_arr = np.asfortranarray(
                np.frombuffer(arm.covariance, dtype=np.float64).reshape(cap, cap)
            )
            reg._eta_arr = np.frombuffer(arm.eta, dtype=np.float64).copy()
            reg._m_dirty = True
            self.policy._counts[arm.action] = arm.pulls
            self.policy._n += arm.pulls
            self.policy._rewards[arm.action] = stats.Mean._from_state(
                n=arm.pulls, mean=arm.reward_mean
            )
