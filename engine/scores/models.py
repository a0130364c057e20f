"""Online score models: one small protocol, River underneath.

A ``ScoreModel`` answers a number for a feature vector (``predict``) and learns
from a labelled one (``learn``). ``LinearScore`` is River's
``StandardScaler | LogisticRegression`` (probabilities: propensity, churn) or
``StandardScaler | LinearRegression`` on log(1 + amount) (money: lifetime
value), trained with plain SGD, which has no per-weight optimiser state, so two
models can be averaged (``merge``).

Scoring happens on every event and learning only when a label comes due, so
``predict`` does not go through River's dict pipeline: the scaler is folded into
the weights (``w / sd`` and an intercept less ``w * mean / sd``) once after each
``learn``, and a prediction is one dot product over a tuple, a few microseconds
instead of River's ten. ``river_predict`` is River's own answer, and the
contract test holds the two equal.

``LinearState`` is a model as plain values (MessagePack), for a worker's
recovery snapshot, for publishing to other workers, and for ``merge``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec
from river import linear_model, optim, preprocessing, utils

from engine.scores.features import FEATURES, Features, as_dict

Kind = Literal["probability", "amount"]

# Probabilities are kept off 0 and 1: a served score of exactly 0 says more than
# any online model knows, and log loss would be infinite on one surprise.
P_MIN = 1e-4
P_MAX = 1.0 - P_MIN
_EXP_MAX = 30.0  # log(1 + amount) above this is beyond any real spend


@runtime_checkable
class ScoreModel(Protocol):
    """One online model of one score (the contract test in tests/unit checks each)."""

    name: str
    kind: Kind

    def predict(self, x: Features) -> float:
        """A probability in [P_MIN, P_MAX] (``kind`` probability) or an amount >= 0."""
        ...

    def learn(self, x: Features, y: float) -> None:
        """One labelled example: y is 0 or 1, or the realised amount."""
        ...

    @property
    def examples(self) -> int:
        """Labelled examples learned so far."""
        ...


class LinearState(msgspec.Struct, frozen=True, tag="sgd"):
    """A ``LinearScore`` as values: what a snapshot keeps and ``merge`` averages."""

    kind: Kind
    features: tuple[str, ...]
    examples: int
    counts: dict[str, int]  # the scaler's running statistics, per feature
    means: dict[str, float]
    variances: dict[str, float]
    weights: dict[str, float]  # on the scaled features, as River keeps them
    intercept: float
    lr: float
    intercept_lr: float
    l2: float
    clip_gradient: float = 1e12


class LinearScore:
    """River's ``StandardScaler | LogisticRegression`` (or ``LinearRegression``)."""

    def __init__(
        self,
        name: str,
        kind: Kind,
        *,
        lr: float = 0.02,
        intercept_lr: float = 0.02,
        l2: float = 1e-4,
        clip_gradient: float = 1e12,
    ) -> None:
        self.name = name
        self.kind: Kind = kind
        self.lr = lr
        self.intercept_lr = intercept_lr
        self.l2 = l2
        self.clip_gradient = clip_gradient
        self.scaler = preprocessing.StandardScaler()
        self.glm: linear_model.LogisticRegression | linear_model.LinearRegression
        if kind == "probability":
            self.glm = linear_model.LogisticRegression(
                optimizer=optim.SGD(lr),
                intercept_lr=intercept_lr,
                l2=l2,
                clip_gradient=clip_gradient,
            )
        else:
            self.glm = linear_model.LinearRegression(
                optimizer=optim.SGD(lr),
                intercept_lr=intercept_lr,
                l2=l2,
                clip_gradient=clip_gradient,
            )
        self._examples = 0
        self._coef: tuple[float, ...] = (0.0,) * len(FEATURES)
        self._bias = 0.0
        self._folded = True

    @property
    def examples(self) -> int:
        return self._examples

    def learn(self, x: Features, y: float) -> None:
        self.learn_target(x, float(y) if self.kind == "probability" else math.log1p(max(0.0, y)))

    def learn_target(self, x: Features, target: float) -> None:
        """Learn the linear predictor's own target: 0/1, or a log amount."""
        named = as_dict(x)
        # River's Pipeline.learn_one, written out: the scaler learns, then the
        # model learns on the scaled features.
        self.scaler.learn_one(named)  # type: ignore[no-untyped-call]
        scaled = self.scaler.transform_one(named)  # type: ignore[no-untyped-call]
        if self.kind == "probability":
            self.glm.learn_one(scaled, bool(target))
        else:
            self.glm.learn_one(scaled, target)
        self._examples += 1
        self._folded = False

    def raw(self, x: Features) -> float:
        """The linear predictor: log-odds, or log(1 + amount)."""
        if not self._folded:
            self._fold()
        return self._bias + float(sum(map(operator.mul, self._coef, x)))

    def predict(self, x: Features) -> float:
        return self._link(self.raw(x))

    def folded(self) -> tuple[tuple[float, ...], float]:
        """The linear predictor on the raw features: (coefficients, intercept)."""
        if not self._folded:
            self._fold()
        return self._coef, self._bias

    def link(self, z: float) -> float:
        """The prediction for a linear predictor ``z`` (``raw``'s scale)."""
        return self._link(z)

    def river_predict(self, x: Features) -> float:
        """River's own answer through its transformers (slower; for checks)."""
        scaled = self.scaler.transform_one(as_dict(x))  # type: ignore[no-untyped-call]
        if isinstance(self.glm, linear_model.LogisticRegression):
            return self._link(self.glm._raw_dot_one(scaled))
        return self._link(self.glm.predict_one(scaled))  # type: ignore[no-untyped-call]

    def _link(self, z: float) -> float:
        if self.kind == "probability":
            if z >= 0.0:
                p = 1.0 / (1.0 + math.exp(-z))
            else:
                e = math.exp(z)
                p = e / (1.0 + e)
            return min(P_MAX, max(P_MIN, p))
        return math.expm1(min(_EXP_MAX, max(0.0, z)))

    def _fold(self) -> None:
        weights = self.glm._weights.to_dict()
        means, variances = self.scaler.means, self.scaler.vars
        coef = []
        bias = float(self.glm.intercept)
        for name in FEATURES:
            var = variances.get(name, 0.0)
            w = weights.get(name, 0.0) if var > 0.0 else 0.0
            if w:
                a = w / math.sqrt(var)
                coef.append(a)
                bias -= a * means.get(name, 0.0)
            else:
                coef.append(0.0)
        self._coef = tuple(coef)
        self._bias = bias
        self._folded = True

    # ---------------------------------------------------------------- as values

    def state(self) -> LinearState:
        scaler = self.scaler
        return LinearState(
            kind=self.kind,
            features=FEATURES,
            examples=self._examples,
            counts={k: int(v) for k, v in scaler.counts.items()},
            means={k: float(v) for k, v in scaler.means.items()},
            variances={k: float(v) for k, v in scaler.vars.items()},
            weights={k: float(v) for k, v in self.glm._weights.to_dict().items()},
            intercept=float(self.glm.intercept),
            lr=self.lr,
            intercept_lr=self.intercept_lr,
            l2=self.l2,
            clip_gradient=self.clip_gradient,
        )

    @classmethod
    def from_state(cls, name: str, state: LinearState) -> LinearScore:
        if state.features != FEATURES:
            raise ValueError(
                f"{name}: the model was trained on other features ({len(state.features)}, "
                f"now {len(FEATURES)}); start it afresh"
            )
        model = cls(
            name,
            state.kind,
            lr=state.lr,
            intercept_lr=state.intercept_lr,
            l2=state.l2,
            clip_gradient=state.clip_gradient,
        )
        model.scaler = preprocessing.StandardScaler._from_state(
            dict(state.counts), dict(state.means), dict(state.variances)
        )
        model.glm._weights = utils.VectorDict(dict(state.weights))
        model.glm.intercept = state.intercept
        model.glm.optimizer.n_iterations = state.examples
        model._examples = state.examples
        model._folded = False
        return model

    def to_bytes(self) -> bytes:
        return _encoder.encode(self.state())

    @classmethod
    def from_bytes(cls, name: str, raw: bytes) -> LinearScore:
        return cls.from_state(name, _state_decoder.decode(raw))


_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(LinearState)


def merge(states: Sequence[LinearState]) -> LinearState:
    """Several workers' models of one score as one, each weighted by its examples.

    The scalers' statistics combine exactly (Chan et al.'s parallel mean and
    variance). The linear functions are averaged on the raw features (each
    model's scaler folded into its weights), then expressed on the merged
    scaler: the merged model's log-odds (or log amount) is the example-weighted
    mean of the parts' at every input. This is federated averaging; for
    models trained on random halves of one population (customers are
    hash-partitioned over workers) it lands close to one model trained on all.
    """
    if not states:
        raise ValueError("merge needs at least one model")
    first = states[0]
    for s in states[1:]:
        if (s.kind, s.features) != (first.kind, first.features):
            raise ValueError("merge: the models differ in kind or features")
    total = sum(s.examples for s in states)
    if total == 0 or len(states) == 1:
        return first
    counts: dict[str, int] = {}
    means: dict[str, float] = {}
    m2: dict[str, float] = {}
    for s in states:
        for name, n_b in s.counts.items():
            if n_b <= 0:
                continue
            mean_b = s.means.get(name, 0.0)
            m2_b = s.variances.get(name, 0.0) * n_b
            n_a = counts.get(name, 0)
            if n_a == 0:
                counts[name], means[name], m2[name] = n_b, mean_b, m2_b
                continue
            n = n_a + n_b
            delta = mean_b - means[name]
            means[name] += delta * n_b / n
            m2[name] += m2_b + delta * delta * n_a * n_b / n
            counts[name] = n
    variances = {name: m2[name] / counts[name] for name in counts}
    raw_w: dict[str, float] = {}
    raw_b = 0.0
    for s in states:
        share = s.examples / total
        bias = s.intercept
        for name, w in s.weights.items():
            var = s.variances.get(name, 0.0)
            if var <= 0.0 or not w:
                continue
            a = w / math.sqrt(var)
            bias -= a * s.means.get(name, 0.0)
            raw_w[name] = raw_w.get(name, 0.0) + share * a
        raw_b += share * bias
    weights: dict[str, float] = {}
    intercept = raw_b
    for name, a in raw_w.items():
        intercept += a * means.get(name, 0.0)
        var = variances.get(name, 0.0)
        weights[name] = a * math.sqrt(var) if var > 0.0 else 0.0
    return LinearState(
        kind=first.kind,
        features=first.features,
        examples=total,
        counts=counts,
        means=means,
        variances=variances,
        weights=weights,
        intercept=intercept,
        lr=first.lr,
        intercept_lr=first.intercept_lr,
        l2=first.l2,
        clip_gradient=first.clip_gradient,
    )


def describe(model: ScoreModel) -> dict[str, Any]:
    """What a model is, for logs and benchmark results."""
    out: dict[str, Any] = {"name": model.name, "kind": model.kind, "examples": model.examples}
    if isinstance(model, LinearScore):
        out.update(
            river=f"StandardScaler | {type(model.glm).__name__}",
            lr=model.lr,
            intercept_lr=model.intercept_lr,
            l2=model.l2,
        )
    return out
