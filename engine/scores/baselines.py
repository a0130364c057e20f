"""Simple baselines behind the same ``ScoreModel`` protocol, to measure the models against.

- ``RfmRate``: the observed rate of the outcome per RFM cell (recency,
  frequency, monetary scores 1-5 on the bands of ``rules/rfm.yaml``), learned
  from the same delayed labels, shrunk toward the overall rate while a cell has
  few examples. The heuristic marketers already use, made a probability.
- ``RunRateSpend``: lifetime value as the customer's historical average: net
  spend so far per day of tenure, times the horizon (tenure counted as at least
  the horizon, so a new customer is expected to repeat what they spent once).
  Learns nothing.
"""

from __future__ import annotations

import math

from engine.rfm import Bands, RfmBands
from engine.scores.features import FEATURES, Features
from engine.scores.models import P_MAX, P_MIN, Kind

_HAS_ORDERED = FEATURES.index("has_ordered")
_SINCE_ORDER = FEATURES.index("log_days_since_order")
_ORDERS_365 = FEATURES.index("log_orders_365d")
_SPEND_365 = FEATURES.index("log_spend_365d")
_REVENUE = FEATURES.index("log_revenue")
_TENURE = FEATURES.index("log_tenure_days")


def _band(value: float, bands: Bands) -> int:
    for i, bound in enumerate(bands):
        if value <= bound:
            return i + 1
    return 5


def rfm_cell(x: Features, bands: RfmBands) -> tuple[int, int, int]:
    """The RFM scores of a feature vector, as engine.rfm scores a profile."""
    if not x[_HAS_ORDERED]:
        return (0, 0, 0)  # never ordered: a cell of its own
    days = math.expm1(x[_SINCE_ORDER])
    orders = round(math.expm1(x[_ORDERS_365]))
    spend = math.expm1(x[_SPEND_365])
    recency = 6 - _band(days, bands.recency_days)
    frequency = _band(orders, bands.frequency_orders) if orders else 1
    monetary = _band(spend, bands.monetary_spend) if spend > 0 else 1
    return (recency, frequency, monetary)


class RfmRate:
    """The outcome's rate in the customer's RFM cell (a ``ScoreModel``)."""

    kind: Kind = "probability"

    def __init__(self, name: str, bands: RfmBands | None = None, prior: float = 5.0) -> None:
        self.name = name
        self.bands = bands or RfmBands()
        self.prior = prior  # examples' worth of the overall rate each cell starts with
        self.cells: dict[tuple[int, int, int], tuple[int, int]] = {}
        self.positives = 0
        self._examples = 0

    @property
    def examples(self) -> int:
        return self._examples

    def predict(self, x: Features) -> float:
        overall = (self.positives + 1.0) / (self._examples + 2.0)
        n, pos = self.cells.get(rfm_cell(x, self.bands), (0, 0))
        p = (pos + self.prior * overall) / (n + self.prior)
        return min(P_MAX, max(P_MIN, p))

    def learn(self, x: Features, y: float) -> None:
        cell = rfm_cell(x, self.bands)
        n, pos = self.cells.get(cell, (0, 0))
        hit = 1 if y else 0
        self.cells[cell] = (n + 1, pos + hit)
        self.positives += hit
        self._examples += 1


class RunRateSpend:
    """Historical average spend per day, times the horizon (a ``ScoreModel``)."""

    kind: Kind = "amount"

    def __init__(self, name: str, horizon_days: float) -> None:
        self.name = name
        self.horizon_days = horizon_days
        self._examples = 0

    @property
    def examples(self) -> int:
        return self._examples

    def predict(self, x: Features) -> float:
        spend = math.expm1(x[_REVENUE])
        tenure = math.expm1(x[_TENURE])
        return spend * self.horizon_days / max(tenure, self.horizon_days)

    def learn(self, x: Features, y: float) -> None:
        self._examples += 1
