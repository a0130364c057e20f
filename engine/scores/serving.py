"""The score models as published for serving, and their prequential quality.

The models are ``ScoreModels.served``: Bayesian linear regression (sums, so
the same model whatever the order of its examples) for propensity, churn and
the lifetime value's correction. SGD models (``ScoreModels.river``) can be
learned and published too, averaged (``Averaged``), for the benchmarks.

One place learns (the dataflow's model step, ``ScoreLearner``): it takes the
labelled examples every customer's state produces (engine/scores/labels.py),
tests each (the model's score before it learns the label) and then trains on
it, and publishes its models now and then as one ``PublishedScores`` value.
The API scores a customer at request time from that value and the customer's
latest features (stored with the profile): a customer's score is then always
the newest models' view of their latest activity, the customer's own state
holds no model output (so it replays byte for byte after a crash), and the
hot path pays only for the features, not for three predictions per event.

Examples are learned in a fixed order within each batch (a hash of each:
see ``_order``), so the models depend on the examples and on how the stream
was cut into batches, which a crash changes; docs/scores.md says by how much.
"""

from __future__ import annotations

import math
import zlib

import msgspec

from engine.scores.bayes import BayesScore, BayesState
from engine.scores.features import FEATURES, Features
from engine.scores.labels import (
    CHURN,
    CLV,
    PROPENSITY,
    TASKS,
    Example,
    ScoreModels,
    ScoreSettings,
    ScoreView,
)
from engine.scores.models import P_MAX, P_MIN, LinearScore, LinearState, ScoreModel
from engine.scores.spend import SpendScore

# AUC from a histogram of the scores: this many equal bins over [0, 1].
AUC_BINS = 100
# The served models are averages of the learned ones over about this many
# examples (an exponential average of each linear predictor, after each
# example; a plain mean over the first ones).
AVERAGE_OVER = 4000


class Averaged(msgspec.Struct, array_like=True, gc=False):
    """A model's linear predictor on the raw features, averaged over its last updates.

    Plain SGD with a constant step forgets fast (the last hundred or so
    examples decide the weights), so a model read at an arbitrary moment
    carries the noise of its latest examples, and of the order they came in.
    The average of the trajectory (Polyak-Ruppert) is what is served: as
    accurate, far steadier, and far less dependent on where batches were cut.
    """

    coef: tuple[float, ...] = ()
    bias: float = 0.0
    updates: int = 0

    def add(self, coef: tuple[float, ...], bias: float) -> None:
        self.updates += 1
        a = max(1.0 / self.updates, 1.0 / AVERAGE_OVER)
        if not self.coef:
            self.coef, self.bias = coef, bias
            return
        self.coef = tuple(c + a * (f - c) for c, f in zip(self.coef, coef, strict=True))
        self.bias += a * (bias - self.bias)

    def raw(self, x: Features) -> float:
        return self.bias + sum(c * v for c, v in zip(self.coef, x, strict=True))


class TaskQuality(msgspec.Struct, kw_only=True, gc=False):
    """Running prequential quality of one score (every example tested before it is learned)."""

    examples: int = 0
    positives: int = 0  # labels of 1 (probabilities)
    log_loss_sum: float = 0.0  # probabilities
    abs_error_sum: float = 0.0  # amounts: |predicted - realised|
    realised_sum: float = 0.0  # amounts
    predicted_sum: float = 0.0  # amounts
    # Scores of positive and negative labels by bin (probabilities), for the AUC.
    pos_bins: list[int] = []
    neg_bins: list[int] = []

    def add(self, kind_probability: bool, score: float, y: float) -> None:
        self.examples += 1
        if kind_probability:
            p = min(P_MAX, max(P_MIN, score))
            if not self.pos_bins:
                self.pos_bins = [0] * AUC_BINS
                self.neg_bins = [0] * AUC_BINS
            b = min(AUC_BINS - 1, int(p * AUC_BINS))
            if y >= 0.5:
                self.positives += 1
                self.log_loss_sum -= math.log(p)
                self.pos_bins[b] += 1
            else:
                self.log_loss_sum -= math.log(1.0 - p)
                self.neg_bins[b] += 1
        else:
            self.abs_error_sum += abs(score - y)
            self.realised_sum += y
            self.predicted_sum += score

    @property
    def log_loss(self) -> float | None:
        return self.log_loss_sum / self.examples if self.examples and self.pos_bins else None

    @property
    def mae(self) -> float | None:
        return self.abs_error_sum / self.examples if self.examples and not self.pos_bins else None

    @property
    def auc(self) -> float | None:
        """Area under the ROC curve of the binned scores (ties within a bin count half)."""
        pos, neg = self.positives, self.examples - self.positives
        if not self.pos_bins or not pos or not neg:
            return None
        below = 0  # negatives in lower bins
        area = 0.0
        for p, n in zip(self.pos_bins, self.neg_bins, strict=True):
            area += p * (below + n / 2.0)
            below += n
        return area / (pos * neg)


class PublishedScores(msgspec.Struct, kw_only=True, gc=False):
    """The three models and their quality: what the model step publishes (and snapshots)."""

    settings: ScoreSettings
    features: tuple[str, ...] = FEATURES
    # Each model's learned state: sums (BayesState) or SGD weights (LinearState).
    propensity: BayesState | LinearState | None = None
    churn: BayesState | LinearState | None = None
    clv: BayesState | LinearState | None = None
    quality: list[TaskQuality] = []  # in TASKS order
    averaged: list[Averaged] = []  # in TASKS order: what is served
    learned_until: float = 0.0  # the latest label time learned (event time)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(PublishedScores)
_features_decoder = msgspec.msgpack.Decoder(tuple[float, tuple[float, ...]])


def encode_published(published: PublishedScores) -> bytes:
    return _encoder.encode(published)


def decode_published(raw: bytes) -> PublishedScores:
    return _decoder.decode(raw)


def encode_features(at: float, x: Features) -> bytes:
    """A customer's features as of event time ``at``, as stored beside the
    profile: MessagePack ``[at, [x...]]``."""
    return _encoder.encode((at, x))


def decode_features(raw: bytes) -> tuple[float, Features]:
    return _features_decoder.decode(raw)


def _order(example: Example) -> tuple[int, str, int, float]:
    """A fixed shuffle: a hash of the example, not the time its label came.

    Labels come in runs (a wave of timers closes many windows with the same
    answer at once; a replay catches up in big batches); SGD learning a run
    in a row drifts toward its label, and the served models would then
    depend on where the runs were cut. Shuffled by a hash, a batch teaches
    the same mixture whatever its size.
    """
    key = f"{example.customer_id}|{example.task}|{example.at!r}".encode()
    return (zlib.crc32(key), example.customer_id, example.task, example.at)


class ScoreLearner:
    """The models every customer's labels teach: test, then train, in a fixed order."""

    def __init__(self, settings: ScoreSettings, published: PublishedScores | None = None) -> None:
        self.settings = settings
        self.models = _models(settings, published)
        self.quality = (
            list(published.quality)
            if published is not None and len(published.quality) == len(TASKS)
            else [TaskQuality() for _ in TASKS]
        )
        self.averaged = (
            list(published.averaged)
            if published is not None and len(published.averaged) == len(TASKS)
            else [Averaged() for _ in TASKS]
        )
        self.learned_until = published.learned_until if published is not None else 0.0

    def learn(self, examples: list[Example]) -> int:
        """One batch of examples, sorted first; returns how many were learned."""
        models = self.models.by_task()
        for example in sorted(examples, key=_order):
            model = models[example.task]
            score = model.predict(example.x)  # tested before it is learned
            self.quality[example.task].add(model.kind == "probability", score, example.y)
            model.learn(example.x, example.y)
            linear = _linear(model)
            if isinstance(linear, LinearScore):  # SGD: serve the average (see Averaged)
                self.averaged[example.task].add(*linear.folded())
            if example.resolved_at > self.learned_until:
                self.learned_until = example.resolved_at
        return len(examples)

    def published(self) -> PublishedScores:
        m = self.models
        assert isinstance(m.propensity, LinearScore | BayesScore)
        assert isinstance(m.churn, LinearScore | BayesScore)
        assert isinstance(m.clv, SpendScore)
        return PublishedScores(
            settings=self.settings,
            propensity=m.propensity.state(),
            churn=m.churn.state(),
            clv=m.clv.state(),
            quality=self.quality,
            averaged=self.averaged,
            learned_until=self.learned_until,
        )


def _linear(model: ScoreModel) -> LinearScore | BayesScore:
    if isinstance(model, SpendScore):
        return model.correction
    assert isinstance(model, LinearScore | BayesScore)
    return model


def _restore(name: str, state: BayesState | LinearState) -> LinearScore | BayesScore:
    if isinstance(state, BayesState):
        return BayesScore.from_state(name, state)
    return LinearScore.from_state(name, state)


def _models(settings: ScoreSettings, published: PublishedScores | None) -> ScoreModels:
    models = ScoreModels.served(settings)
    if published is None or published.features != FEATURES:
        return models  # nothing learned yet, or on other features: start afresh
    if published.propensity is not None:
        models.propensity = _restore(TASKS[PROPENSITY], published.propensity)
    if published.churn is not None:
        models.churn = _restore(TASKS[CHURN], published.churn)
    if published.clv is not None:
        models.clv = SpendScore.from_state(TASKS[CLV], settings.clv_days, published.clv)
    return models


class ServedScores(ScoreView, kw_only=True):
    """A customer's scores as the API serves them (inside the profile);
    ``scored_at`` is the event time of the features scored (the customer's
    last event)."""

    examples: int  # labelled examples the models have learned (0: the cold-start answer)


class ScoreServer:
    """Scores customers from a ``PublishedScores``; built once per published value."""

    def __init__(self, published: PublishedScores) -> None:
        self.published = published
        self.models = _models(published.settings, published)
        self.examples = sum(q.examples for q in published.quality)

    @classmethod
    def untrained(cls, settings: ScoreSettings) -> ScoreServer:
        return cls(PublishedScores(settings=settings))

    def predict(self, task: int, x: Features) -> float:
        """The served (averaged) model's answer; the live one's before any example."""
        model = self.models.by_task()[task]
        averaged = self.published.averaged
        linear = _linear(model)
        if (
            not isinstance(linear, LinearScore)  # sums: the posterior mean is steady
            or len(averaged) != len(TASKS)
            or not averaged[task].updates
        ):
            return model.predict(x)
        z = averaged[task].raw(x)
        if isinstance(model, SpendScore):
            return model.predict_corrected(x, z)
        return linear.link(z)

    def score(self, x: Features, scored_at: float) -> ServedScores:
        s = self.published.settings
        return ServedScores(
            purchase_propensity=round(self.predict(PROPENSITY, x), 4),
            propensity_days=s.propensity_days,
            churn_risk=round(self.predict(CHURN, x), 4),
            churn_days=s.churn_days,
            predicted_clv=round(self.predict(CLV, x), 2),
            clv_days=s.clv_days,
            scored_at=scored_at,
            examples=self.examples,
        )
