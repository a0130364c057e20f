"""Scores whose learned state is a sum: River's Bayesian linear regression.

``LinearScore`` (SGD) ends where the order of its examples takes it: the same
examples learned in another order give another model, and the order in which
labels reach the one model step depends on how the stream was cut into
batches, which a crash or another worker count changes. Bayesian linear
regression keeps two sums instead: the precision ``alpha^-1 I + beta * sum x
x^T`` and the natural mean ``beta * sum y x`` (River keeps both exactly, by
rank-one additions). The posterior mean is their solution, so the model is
the same, to the rounding of a sum, whatever the order: served scores replay
after a crash to 1e-9 (benchmarks/recovery.py).

For probabilities it is a linear probability model (the expected label, kept
within [``PROBABILITY_FLOOR``, 1 - floor]); for amounts it regresses
log(1 + amount). River's model needs no feature scaling, and the features are
log-scaled or bounded already (engine/scores/features.py). A constant feature
is the intercept. The posterior mean is solved once per change, on the exact
sums (not River's Sherman-Morrison covariance, whose rounding depends on the
order), and a prediction is then one dot product.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
from river import linear_model

from engine.scores.features import FEATURES, Features
from engine.scores.models import Kind

# A linear probability model can leave [0, 1]: held this far inside it, so one
# surprise costs a bounded log loss (-log 0.005 = 5.3).
PROBABILITY_FLOOR = 0.005
_EXP_MAX = 30.0
_BIAS = "bias"
_NAMES = (*FEATURES, _BIAS)


class BayesState(msgspec.Struct, frozen=True, tag="bayes"):
    """A ``BayesScore`` as values: the sums, for snapshots and publishing."""

    kind: Kind
    features: tuple[str, ...]
    examples: int
    alpha: float
    beta: float
    precision: list[list[float]]  # (features + 1)^2, in ``_NAMES`` order
    natural_mean: list[float]


class BayesScore:
    """River ``BayesianLinearRegression`` on the features and a constant."""

    def __init__(self, name: str, kind: Kind, *, alpha: float = 10.0, beta: float = 4.0) -> None:
        self.name = name
        self.kind: Kind = kind
        self.alpha = alpha
        self.beta = beta
        self.blr = linear_model.BayesianLinearRegression(alpha=alpha, beta=beta)
        # Every feature is known from the start, in a fixed order: the sums'
        # rows and columns are ``_NAMES``, whatever the first example holds.
        self.blr._ensure_features(_NAMES)
        self._examples = 0
        self._coef: np.ndarray = np.zeros(len(_NAMES))
        self._solved = True

    @property
    def examples(self) -> int:
        return self._examples

    def learn(self, x: Features, y: float) -> None:
        self.learn_target(x, float(y) if self.kind == "probability" else math.log1p(max(0.0, y)))

    def learn_target(self, x: Features, target: float) -> None:
        named = dict(zip(FEATURES, x, strict=True))
        named[_BIAS] = 1.0
        self.blr.learn_one(named, target)  # type: ignore[no-untyped-call]
        self._examples += 1
        self._solved = False

    def coefficients(self) -> tuple[float, ...]:
        """The posterior mean, in ``FEATURES`` order then the intercept."""
        if not self._solved:
            n = len(_NAMES)
            self._coef = np.linalg.solve(self.blr._ss_arr[:n, :n], self.blr._eta_arr[:n])
            self._solved = True
        return tuple(float(c) for c in self._coef)

    def raw(self, x: Features) -> float:
        coef = self.coefficients()
        return coef[-1] + math.fsum(c * v for c, v in zip(coef, x, strict=False))

    def link(self, z: float) -> float:
        if self.kind == "probability":
            return min(1.0 - PROBABILITY_FLOOR, max(PROBABILITY_FLOOR, z))
        return math.expm1(min(_EXP_MAX, max(0.0, z)))

    def predict(self, x: Features) -> float:
        if not self._examples and self.kind == "probability":
            return 0.5  # nothing learned: no information either way
        return self.link(self.raw(x))

    def state(self) -> BayesState:
        n = len(_NAMES)
        return BayesState(
            kind=self.kind,
            features=FEATURES,
            examples=self._examples,
            alpha=self.alpha,
            beta=self.beta,
            precision=self.blr._ss_arr[:n, :n].tolist(),
            natural_mean=self.blr._eta_arr[:n].tolist(),
        )

    @classmethod
    def from_state(cls, name: str, state: BayesState) -> BayesScore:
        if state.features != FEATURES:
            raise ValueError(
                f"{name}: the model was trained on other features ({len(state.features)}, "
                f"now {len(FEATURES)}); start it afresh"
            )
        model = cls(name, state.kind, alpha=state.alpha, beta=state.beta)
        n = len(_NAMES)
        blr = model.blr
        blr._ss_arr[:n, :n] = np.array(state.precision, dtype=np.float64)
        blr._eta_arr[:n] = np.array(state.natural_mean, dtype=np.float64)
        blr._ss_inv_arr[:n, :n] = np.linalg.inv(blr._ss_arr[:n, :n])
        blr._m_dirty = True
        model._examples = state.examples
        model._solved = False
        return model
