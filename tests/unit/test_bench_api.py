"""benchmarks/api.py's server-side quantiles: Prometheus' histogram_quantile."""

from __future__ import annotations

import math

from benchmarks.api import histogram_quantile


def test_linear_within_the_bucket_holding_the_rank() -> None:
    cumulative = {0.001: 50.0, 0.002: 90.0, 0.005: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, cumulative) == 0.001
    assert math.isclose(histogram_quantile(0.7, cumulative), 0.0015)
    assert math.isclose(histogram_quantile(0.95, cumulative), 0.0035)
    assert math.isclose(histogram_quantile(0.25, cumulative), 0.0005)  # from 0 in the first


def test_a_rank_beyond_the_last_bound_answers_that_bound() -> None:
    cumulative = {0.001: 10.0, 1.0: 90.0, math.inf: 100.0}
    assert histogram_quantile(0.99, cumulative) == 1.0


def test_no_requests_no_figure() -> None:
    assert math.isnan(histogram_quantile(0.5, {0.001: 0.0, math.inf: 0.0}))
    assert math.isnan(histogram_quantile(0.5, {}))
