"""Predicted lifetime value: the historical run rate, corrected by a River regression.

Spend is heavy-tailed and mostly zero over a short horizon, and a linear model
of log spend extrapolates into absurd amounts (exp of a large linear
predictor) for customers unlike the few it has learned from. So the model does
not predict spend from nothing: it starts from the customer's historical run
rate (``RunRateSpend``, the baseline) and learns how far, in log(1 + spend),
the realised value departs from it given the features (recency, overdue,
frequency, ...): ``log(1 + clv) = log(1 + run_rate) + f(x)``, ``f`` a River
``StandardScaler | LinearRegression`` trained with SGD on squared error, its
correction clamped to a factor of ``e ** max_correction`` (e, by default) either way. Before it
has learned anything the prediction is the run rate itself.

Squared error in log space fits the conditional median more than the mean:
the predictions are meant to rank customers and be close per customer (mean
absolute error), and will undershoot the total (reported as pred/real).
"""

from __future__ import annotations

import math

from engine.scores.baselines import RunRateSpend
from engine.scores.bayes import BayesScore, BayesState
from engine.scores.features import Features
from engine.scores.models import Kind, LinearScore, LinearState


class SpendScore:
    """Run rate times a learned correction (a ``ScoreModel`` of kind amount)."""

    kind: Kind = "amount"

    def __init__(
        self,
        name: str,
        horizon_days: float,
        *,
        lr: float = 0.01,
        intercept_lr: float = 0.01,
        l2: float = 1e-4,
        max_correction: float = 1.0,
        correction: LinearScore | BayesScore | None = None,
    ) -> None:
        self.name = name
        self.horizon_days = horizon_days
        self.base = RunRateSpend(name, horizon_days)
        self.correction: LinearScore | BayesScore = correction or LinearScore(
            name, "amount", lr=lr, intercept_lr=intercept_lr, l2=l2, clip_gradient=1.0
        )
        self.max_correction = max_correction

    @property
    def examples(self) -> int:
        return self.correction.examples

    def predict(self, x: Features) -> float:
        if not self.correction.examples:
            return self.base.predict(x)
        bound = self.max_correction
        delta = min(bound, max(-bound, self.correction.raw(x)))
        return max(0.0, math.expm1(math.log1p(self.base.predict(x)) + delta))

    def predict_corrected(self, x: Features, correction: float) -> float:
        """The run rate corrected by ``correction`` (log scale, clamped as ``predict``)."""
        bound = self.max_correction
        delta = min(bound, max(-bound, correction))
        return max(0.0, math.expm1(math.log1p(self.base.predict(x)) + delta))

    def learn(self, x: Features, y: float) -> None:
        self.correction.learn_target(x, math.log1p(max(0.0, y)) - math.log1p(self.base.predict(x)))

    def state(self) -> LinearState | BayesState:
        return self.correction.state()

    @classmethod
    def from_state(
        cls,
        name: str,
        horizon_days: float,
        state: LinearState | BayesState,
        max_correction: float = 1.0,
    ) -> SpendScore:
        model = cls(name, horizon_days, max_correction=max_correction)
        if isinstance(state, BayesState):
            model.correction = BayesScore.from_state(name, state)
        else:
            model.correction = LinearScore.from_state(name, state)
        return model
