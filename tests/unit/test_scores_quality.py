"""benchmarks.score_quality on slices: the real Online Retail file and a made-up order file."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

import pytest

from benchmarks import common, score_quality
from benchmarks.score_quality import OrderMapping, auc, read_orders


def test_a_slice_of_online_retail_is_replayed_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not score_quality.ONLINE_RETAIL.exists():
        pytest.skip(f"{score_quality.ONLINE_RETAIL} is not here (../shared/data)")
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    code = score_quality.main(
        ["--datasets", "online-retail", "--limit", "4000", "--quiet", "--output", "slice"]
    )
    assert code == 0
    [result] = json.loads((tmp_path / "slice.json").read_text())["results"]
    assert result["dataset"] == "online-retail" and result["orders"] > 100
    for model in ("pulse", "baseline"):  # a month and a half: no 90-day churn window closed
        metrics = result["prequential"]["propensity"][model]
        assert metrics["n"] > 0 and metrics["log_loss"] > 0
        assert result["prequential"]["churn"][model]["n"] == 0
    assert result["cost"]["us_per_event"] > 0
    out = capsys.readouterr().out
    assert "Propensity and churn" in out and "| online-retail | propensity |" in out


def test_any_order_file_plugs_in_with_a_mapping_and_is_compared_with_bg_nbd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    lines = ["customer_id date dollar_value"]
    for c in range(300):
        day = rng.randrange(0, 60)
        alive = rng.random() < 0.6
        while day < 540:
            when = (date(1997, 1, 1) + timedelta(days=day)).strftime("%Y%m%d")
            lines.append(f"{c:04d} {when} {rng.uniform(5, 60):.2f}")
            day += rng.randrange(10, 90) if alive else 10_000
    data = tmp_path / "orders.txt"
    data.write_text("\n".join(lines) + "\n")
    mapping = tmp_path / "orders.toml"
    mapping.write_text(
        'delimiter = "whitespace"\ntimestamp_format = "%Y%m%d"\n'
        '[columns]\ncustomer = "customer_id"\ntimestamp = "date"\namount = "dollar_value"\n'
    )
    orders = read_orders(data, OrderMapping.load(mapping))
    assert orders == sorted(orders, key=lambda o: (o.ts, o.row))
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    code = score_quality.main(
        f"--csv {data} --mapping {mapping} --cutoff 1998-01-01 --clv-days 90 "
        "--quiet --output mapped".split()
    )
    assert code == 0
    [result] = json.loads((tmp_path / "mapped.json").read_text())["results"]
    cut = result["clv_at_cutoff"]
    assert cut["customers"] > 0
    for model in ("pulse", "baseline", "bg_nbd"):
        assert cut[model]["mae"] >= 0
    assert "bg_nbd_r" in cut["bg_nbd"]["params"]


def test_auc_is_exact_with_ties() -> None:
    assert auc([0, 1], [0.1, 0.9]) == 1.0
    assert auc([1, 0], [0.1, 0.9]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert auc([0, 0, 1], [0.2, 0.6, 0.4]) == 0.5
