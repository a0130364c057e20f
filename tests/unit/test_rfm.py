"""RFM scores: fixed bands, recency computed at read time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.rfm import RfmBands, RfmError, rfm

NOW = 1_800_000_000.0
DAY = 86400.0
BANDS = RfmBands()


def test_a_recent_frequent_big_spender_scores_555() -> None:
    scores = rfm(NOW - 2 * DAY, orders_12m=12, spend_12m=2500.0, now=NOW, bands=BANDS)
    assert (scores.recency, scores.frequency, scores.monetary) == (5, 5, 5)
    assert scores.score == "555" and scores.days_since_last_order == 2.0


def test_a_customer_who_never_ordered_scores_111_without_recency() -> None:
    scores = rfm(0.0, 0, 0.0, NOW, BANDS)
    assert scores.score == "111" and scores.days_since_last_order is None


@pytest.mark.parametrize(
    ("days", "expected"), [(0, 5), (7, 5), (8, 4), (30, 4), (31, 3), (90, 3), (180, 2), (181, 1)]
)
def test_recency_falls_as_days_pass(days: float, expected: int) -> None:
    assert rfm(NOW - days * DAY, 1, 10.0, NOW, BANDS).recency == expected


@pytest.mark.parametrize(("orders", "expected"), [(1, 1), (2, 2), (3, 3), (4, 3), (8, 4), (9, 5)])
def test_frequency_bands(orders: int, expected: int) -> None:
    assert rfm(NOW, orders, 10.0, NOW, BANDS).frequency == expected


def test_bands_must_increase_and_have_four_bounds() -> None:
    with pytest.raises(RfmError, match="recency_days"):
        RfmBands.from_mapping({"recency_days": [30, 7, 90, 180]})
    with pytest.raises(RfmError, match="monetary_spend"):
        RfmBands.from_mapping({"monetary_spend": [1, 2]})
    with pytest.raises(RfmError, match="unknown"):
        RfmBands.from_mapping({"unknown": 1})


def test_the_shipped_rules_file_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "rules" / "rfm.yaml"
    assert RfmBands.from_mapping(yaml.safe_load(path.read_text())) == RfmBands()
