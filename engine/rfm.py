"""RFM: recency, frequency and monetary scores from 1 (low) to 5 (high).

Recency depends on the clock, so RFM is computed when a profile is read, from
the served view (last order time, orders and spend over 12 months), never
stored. Thresholds are fixed bands rather than population quintiles so a score
means the same thing for every customer and every day; tune them in
``rules/rfm.yaml``.
"""

from __future__ import annotations

from typing import Any

import msgspec

Bands = tuple[float, float, float, float]


class RfmError(ValueError):
    """rules/rfm.yaml is invalid; the message names the field."""


class RfmBands(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Upper bounds for scores 1..4 (anything beyond scores 5, or 1 for recency days)."""

    recency_days: Bands = (7.0, 30.0, 90.0, 180.0)  # days since the last order: <=7 scores 5
    frequency_orders: Bands = (1.0, 2.0, 4.0, 8.0)  # orders in 12 months: >8 scores 5
    monetary_spend: Bands = (50.0, 150.0, 400.0, 1000.0)  # spend in 12 months: >1000 scores 5

    def __post_init__(self) -> None:
        for name in ("recency_days", "frequency_orders", "monetary_spend"):
            bands = getattr(self, name)
            if list(bands) != sorted(bands):
                raise ValueError(f"{name}: bands must increase")

    @classmethod
    def from_mapping(cls, data: Any, source: str = "rfm") -> RfmBands:
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise RfmError(f"{source}: {exc}") from None


class Rfm(msgspec.Struct, frozen=True):
    recency: int
    frequency: int
    monetary: int
    score: str  # e.g. "545"
    days_since_last_order: float | None


def _up(value: float, bands: tuple[float, float, float, float]) -> int:
    """1 for values within the first band ... 5 beyond the last."""
    for i, bound in enumerate(bands):
        if value <= bound:
            return i + 1
    return 5


def rfm(
    last_order_at: float, orders_12m: int, spend_12m: float, now: float, bands: RfmBands
) -> Rfm:
    if last_order_at <= 0:
        recency, days = 1, None
    else:
        days = max(0.0, (now - last_order_at) / 86400.0)
        recency = 6 - _up(days, bands.recency_days)
    frequency = _up(orders_12m, bands.frequency_orders) if orders_12m else 1
    monetary = _up(spend_12m, bands.monetary_spend) if spend_12m > 0 else 1
    return Rfm(
        recency,
        frequency,
        monetary,
        f"{recency}{frequency}{monetary}",
        None if days is None else round(days, 2),
    )
