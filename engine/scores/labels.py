"""Delayed labels: score a customer now, learn from what happened once it is known.

Each score asks about a window after the moment it is made:

| score | label of a snapshot taken at t (P, N, H: the horizons) |
|---|---|
| propensity | 1 if an order is placed in [t, t + P), else 0 |
| churn | 1 if no order is placed in [t, t + N), else 0 |
| clv | net spend (orders less refunds) in [t, t + H) |

A ``Snapshot`` keeps the customer's features at t and the score served at t.
When its window closes the snapshot becomes an ``Example`` (features, label,
and the score made before the label existed) and the model learns it: test,
then train, and nothing about the window is seen before it closes.

A propensity or churn label is decided by the first order in the window, but
is learned only when the window closes, like every other. Learned at the
order, labels that resolve early (a purchase; "not churned") would reach the
model a whole horizon ahead of the others (no purchase; churned), so the
recent training stream would over-represent them: on CDNOW, learning churn
at the order drove its predictions toward "never churns" for the first
90 days and its log loss to 2.4. Learned at the close, every example arrives
exactly one horizon after it was scored, an unbiased, time-shifted sample. A
customer keeps at most one pending snapshot per score (``clv_pending`` for
lifetime value, spaced ``clv_days / clv_pending`` apart), so the memory is
bounded per customer whatever the event rate. A new snapshot is taken at the
first event after the previous one resolved, or, when none comes, at the
moment it resolved (a timer): a customer who went quiet keeps being scored
and keeps teaching the models what going quiet looks like, up to
``max_idle_days`` after their last event.

``Scorer`` is pure and deterministic. Per customer it keeps a
``CustomerScores`` (next to the ``CustomerState``); per worker the
``ScoreModels``. The dataflow calls, for each event of a customer:

    examples = scorer.fire_due(scores, state, event.ts)   # before Engine.apply
    state, effects = engine.apply(state, event)
    scores, more = scorer.on_event(scores, state, event)

and ``scorer.fire_due(scores, state, now)`` when the customer's wake-up
(``Scorer.next_due``) comes with no event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from engine import events as ev
from engine.pending_labels import CustomerScores, Snapshot
from engine.profile import CustomerState
from engine.scores.baselines import RfmRate, RunRateSpend
from engine.scores.bayes import BayesScore
from engine.scores.features import DAY_S, Features, features
from engine.scores.models import LinearScore, ScoreModel
from engine.scores.spend import SpendScore

TASKS: tuple[str, str, str] = ("propensity", "churn", "clv")
PROPENSITY, CHURN, CLV = 0, 1, 2


class ScoreSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Horizons and memory bounds of the scores (``[scores]`` in the settings)."""

    propensity_days: float = 7.0  # propensity: an order within this many days
    churn_days: float = 90.0  # churn: no order within this many days
    clv_days: float = 365.0  # lifetime value: net spend within this many days
    clv_pending: int = 1  # lifetime-value snapshots pending per customer at once
    max_idle_days: float = 365.0  # no new snapshot by timer this long after the last event
    idle_spacing: float = 1.0  # a quiet customer's next snapshot: this times their quiet time later

    def __post_init__(self) -> None:
        for name in ("propensity_days", "churn_days", "clv_days", "max_idle_days"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not self.idle_spacing >= 0:
            raise ValueError("idle_spacing must be 0 or more")
        if not 1 <= self.clv_pending <= 12:
            raise ValueError("clv_pending must be between 1 and 12")

    def horizon_s(self, task: int) -> float:
        days = (self.propensity_days, self.churn_days, self.clv_days)[task]
        return days * DAY_S

    def max_pending(self, task: int) -> int:
        return self.clv_pending if task == CLV else 1


class Example(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A snapshot with its label: tested (``score``) before it was learned."""

    task: int
    customer_id: str
    at: float
    resolved_at: float
    x: Features
    y: float
    score: float
    at_event: bool


@dataclass
class ScoreModels:
    """The three models of one worker, in ``TASKS`` order."""

    propensity: ScoreModel
    churn: ScoreModel
    clv: ScoreModel

    def by_task(self) -> tuple[ScoreModel, ScoreModel, ScoreModel]:
        return (self.propensity, self.churn, self.clv)

    @classmethod
    def river(cls, settings: ScoreSettings | None = None) -> ScoreModels:
        """Pulse's models: River linear models on the scaled features."""
        settings = settings or ScoreSettings()
        return cls(
            LinearScore("propensity", "probability"),
            LinearScore("churn", "probability"),
            SpendScore("clv", settings.clv_days),
        )

    @classmethod
    def bayes(cls, settings: ScoreSettings | None = None) -> ScoreModels:
        """River Bayesian linear regressions throughout: the same models
        whatever the order of the examples (engine/scores/bayes.py)."""
        settings = settings or ScoreSettings()
        return cls(
            BayesScore("propensity", "probability"),
            BayesScore("churn", "probability"),
            SpendScore("clv", settings.clv_days, correction=BayesScore("clv", "amount")),
        )

    @classmethod
    def served(cls, settings: ScoreSettings | None = None) -> ScoreModels:
        """What the dataflow learns and the API serves: Bayesian linear
        regression for every score (the lifetime value's correction of its run
        rate included). Its state is a sum over the examples, so the model is
        the same whatever order they came in: after a crash and a replay, or on
        another number of workers, it is the same model to rounding
        (tests/e2e/test_crash_recovery.py, test_scale_out.py).

        SGD logistic regression ranks churn better (AUC 0.602 and 0.654
        against 0.570 and 0.590 on Online Retail and CDNOW, docs/scores.md),
        but a constant step follows its latest examples, and the order of
        labels that resolve at timers depends on how the stream was cut: two
        runs over the same events differed by up to 0.24 on average in the
        churn risk they served. A model that is not the same after a crash is
        not served; SGD stays in the benchmark (``ScoreModels.river``)."""
        return cls.bayes(settings)

    @classmethod
    def baseline(cls, settings: ScoreSettings) -> ScoreModels:
        """RFM-cell rates and the historical run rate (engine/scores/baselines.py)."""
        return cls(RfmRate("propensity"), RfmRate("churn"), RunRateSpend("clv", settings.clv_days))


class ScoreView(msgspec.Struct, omit_defaults=True):
    """What the profile serves of the scores (rounded, absolute values)."""

    purchase_propensity: float
    propensity_days: float
    churn_risk: float
    churn_days: float
    predicted_clv: float
    clv_days: float
    scored_at: float


class Scorer:
    """Delayed-label bookkeeping around one worker's ``ScoreModels``."""

    def __init__(
        self,
        settings: ScoreSettings | None = None,
        models: ScoreModels | None = None,
        *,
        learn: bool = True,
        scoring: bool = True,
    ) -> None:
        """``scoring`` False: labels only, no models here. The served scores are
        left alone, snapshots are taken (features computed) only when one is
        due, and every example goes back to the caller, whose models test and
        learn it elsewhere (the dataflow's model step, api/routes for serving):
        the customer's side stays cheap and independent of any model."""
        self.settings = settings or ScoreSettings()
        self.scoring = scoring
        self.models = models or ScoreModels.river(self.settings)
        self._models = self.models.by_task()
        self.learn = learn and scoring  # False: examples are returned for a learner elsewhere
        self._horizons = tuple(self.settings.horizon_s(t) for t in range(len(TASKS)))
        self._max_pending = tuple(self.settings.max_pending(t) for t in range(len(TASKS)))
        self._max_idle_s = self.settings.max_idle_days * DAY_S
        self._idle_spacing = self.settings.idle_spacing

    @staticmethod
    def next_due(scores: CustomerScores | None) -> float | None:
        """Event time at which a pending label becomes known without an event."""
        if scores is None:
            return None
        # A loop, not min() over a generator: asked at every event and wake-up.
        due = scores.wake_at or math.inf
        for p in scores.pending:
            if p.due < due:
                due = p.due
        return None if due == math.inf else due

    @staticmethod
    def due_by(scores: CustomerScores, until: float) -> bool:
        """Something is due by ``until``: ``next_due(scores) <= until``, sooner."""
        if scores.wake_at and scores.wake_at <= until:
            return True
        for p in scores.pending:  # noqa: SIM110 (a loop: no generator per event)
            if p.due <= until:
                return True
        return False

    def fire_due(
        self, scores: CustomerScores | None, state: CustomerState | None, until: float
    ) -> list[Example]:
        """Labels whose window closed by ``until`` with no order to end it earlier,
        and the timer snapshots due by then.

        Call it with the state as it was before any event at or after ``until``
        is applied: a snapshot taken here must see the customer as of its time.
        """
        out: list[Example] = []
        if scores is None or state is None:
            return out
        pending = scores.pending
        while pending or scores.wake_at:
            t = min((p.due for p in pending), default=math.inf)
            woke = bool(scores.wake_at) and scores.wake_at <= t
            if woke:
                t = scores.wake_at
            if t > until:
                break
            closed = [p for p in pending if p.due <= t]
            if closed:
                pending[:] = [p for p in pending if p.due > t]
                for p in closed:
                    if p.task == CLV:
                        y = max(0.0, p.spend)
                    elif p.task == PROPENSITY:
                        y = 1.0 if p.ordered else 0.0
                    else:
                        y = 0.0 if p.ordered else 1.0
                    out.append(self._resolve(p, state.customer_id, t, y))
            idle = t - state.last_seen
            if woke:
                scores.wake_at = 0.0
                self._score(scores, state, t, False, range(len(TASKS)))
            elif idle <= self._max_idle_s:
                # The next snapshot of a quiet customer comes as much later
                # again as they have been quiet: a few per customer and year
                # instead of one per horizon, densest right after they went quiet.
                later = t + self._idle_spacing * idle
                if later <= t:
                    self._score(scores, state, t, False, [p.task for p in closed])
                else:
                    self._score(scores, state, t, False, ())
                    if later - state.last_seen <= self._max_idle_s:
                        scores.wake_at = min(scores.wake_at or math.inf, later)
        return out

    def on_event(
        self, scores: CustomerScores | None, state: CustomerState, event: ev.BaseEvent
    ) -> tuple[CustomerScores, list[Example]]:
        """After ``Engine.apply``: an order or refund counts into the open windows;
        then the customer is scored (and a snapshot taken where none is pending).
        Returns no examples (labels are learned at their window's close), the
        list is there for symmetry with ``fire_due``."""
        if scores is None:
            scores = CustomerScores()
        out: list[Example] = []
        ts = event.ts
        if isinstance(event, ev.OrderPlaced | ev.OrderRefunded) and scores.pending:
            placed = isinstance(event, ev.OrderPlaced)
            amount = event.total if isinstance(event, ev.OrderPlaced) else -_refunded(state, event)
            for p in scores.pending:
                if p.at <= ts < p.due:
                    p.spend += amount
                    if placed:
                        p.ordered = True
        now = max(ts, state.last_seen)
        self._score(scores, state, now, True, range(len(TASKS)))
        scores.wake_at = 0.0  # every score has a snapshot pending again
        return scores, out

    def _resolve(self, p: Snapshot, customer_id: str, at: float, y: float) -> Example:
        example = Example(p.task, customer_id, p.at, at, p.x, y, p.score, p.at_event)
        if self.learn:
            self._models[p.task].learn(p.x, y)
        return example

    def _score(
        self,
        scores: CustomerScores,
        state: CustomerState,
        now: float,
        at_event: bool,
        tasks: list[int] | range | tuple[()],
    ) -> None:
        x: Features | None = None
        predictions: list[float] | None = None
        if self.scoring:
            x = features(state, now)
            predictions = [m.predict(x) for m in self._models]
            scores.propensity, scores.churn, scores.clv = predictions
            scores.scored_at = now
        pending = scores.pending
        # Pending snapshots per task, in one pass (this runs at every event).
        counts = [0, 0, 0]
        latest = [-math.inf, -math.inf, -math.inf]
        for p in pending:
            counts[p.task] += 1
            if p.at > latest[p.task]:
                latest[p.task] = p.at
        for task in tasks:
            if counts[task]:
                if counts[task] >= self._max_pending[task]:
                    continue
                spacing = self._horizons[task] / self._max_pending[task]
                if now - latest[task] < spacing:
                    continue
            if x is None:
                x = features(state, now)
            score = predictions[task] if predictions is not None else 0.0
            pending.append(Snapshot(task, now, now + self._horizons[task], x, score, at_event))

    def view(self, scores: CustomerScores) -> ScoreView:
        s = self.settings
        return ScoreView(
            purchase_propensity=round(scores.propensity, 4),
            propensity_days=s.propensity_days,
            churn_risk=round(scores.churn, 4),
            churn_days=s.churn_days,
            predicted_clv=round(scores.clv, 2),
            clv_days=s.clv_days,
            scored_at=scores.scored_at,
        )


def _refunded(state: CustomerState, event: ev.OrderRefunded) -> float:
    """The amount a refund takes back: as stated, else the whole order if known."""
    if event.amount is not None:
        return event.amount
    for record in state.order_history:
        if record.order_id == event.order_id:
            return record.total
    return 0.0


_encoder = msgspec.msgpack.Encoder()
_scores_decoder = msgspec.msgpack.Decoder(CustomerScores)


def encode_scores(scores: CustomerScores) -> bytes:
    """A customer's scores and pending snapshots for a recovery snapshot."""
    return _encoder.encode(scores)


def decode_scores(raw: bytes) -> CustomerScores:
    return _scores_decoder.decode(raw)
