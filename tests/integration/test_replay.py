"""`pulse replay`: real historical data through Kafka and the dataflow."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

from engine.profile import parse_view
from pulse.cli import main
from pulse.settings import Settings
from tests.helpers import PulseProcess, consume, value_of, wait_for

pytestmark = pytest.mark.integration

RETAIL = Path(__file__).resolve().parents[2].parent / "shared/data/online-retail"
RETAIL_CSV = RETAIL / "online_retail_non_uk.csv"


def _env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for name, value in settings.as_environ().items():
        monkeypatch.setenv(name, value)


def test_jsonl_replay_reports_counts_and_unkeyed_lines(
    pulse_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = [
        orjson.dumps({"type": "page_view", "event_id": f"e{i}", "customer_id": f"c{i % 3}"})
        for i in range(50)
    ] + [b"not json at all"]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    _env(monkeypatch, pulse_settings)
    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "replayed 51 of 51 records" in out
    assert "1 record(s) had no customer key" in out
    records = consume(pulse_settings, pulse_settings.events_topic, 51)
    keys = Counter(r.key() for r in records)
    assert keys == {b"c0": 17, b"c1": 17, b"c2": 16, None: 1}


def test_missing_file_and_csv_without_mapping_are_clear_errors(
    pulse_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _env(monkeypatch, pulse_settings)
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert main(["replay", str(tmp_path / "x.csv")]) == 2
    assert "--mapping" in capsys.readouterr().err


def test_csv_mapping_turns_rows_into_events(
    pulse_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "views.csv").write_text(
        "Customer,Sku,When,Price\nc1,S1,1/2/2011 10:30,2.50\nc2,S2,1/2/2011 10:31,3\n"
    )
    (tmp_path / "map.toml").write_text(
        'type = "product_view"\ntimestamp_format = "%m/%d/%Y %H:%M"\ntimezone = "Europe/London"\n'
        '[fields]\ncustomer_id = "Customer"\nsku = "Sku"\ntimestamp = "When"\nprice = "Price"\n'
    )
    _env(monkeypatch, pulse_settings)
    assert (
        main(["replay", str(tmp_path / "views.csv"), "--mapping", str(tmp_path / "map.toml")]) == 0
    )
    events = [
        orjson.loads(value_of(r)) for r in consume(pulse_settings, pulse_settings.events_topic, 2)
    ]
    by_customer = {e["customer_id"]: e for e in events}
    assert by_customer["c1"]["sku"] == "S1" and by_customer["c1"]["price"] == 2.5
    assert by_customer["c1"]["timestamp"] == "2011-01-02T10:30:00+00:00"
    assert by_customer["c1"]["event_id"] != by_customer["c2"]["event_id"]


@pytest.mark.skipif(not RETAIL_CSV.exists(), reason=f"data set not found at {RETAIL}")
def test_online_retail_orders_land_on_profiles_exactly_once(
    pulse_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaying the file twice must not count an invoice twice (ids are invoice numbers)."""
    with RETAIL_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    invoices: dict[str, set[str]] = {}
    all_invoices: dict[str, set[str]] = {}
    for row in rows:
        all_invoices.setdefault(row["CustomerID"], set()).add(row["InvoiceNo"])
        if not row["InvoiceNo"].startswith("C"):
            invoices.setdefault(row["CustomerID"], set()).add(row["InvoiceNo"])
    _env(monkeypatch, pulse_settings)
    assert main(["replay", str(RETAIL_CSV), "--preset", "online-retail"]) == 0
    assert main(["replay", str(RETAIL_CSV), "--preset", "online-retail"]) == 0

    flow = PulseProcess(pulse_settings, tmp_path, "dataflow", "run")
    try:
        raw_client = redis.Redis.from_url(pulse_settings.redis)
        sample = sorted(invoices, key=lambda c: -len(invoices[c]))[:5] + sorted(invoices)[:5]

        def field(customer: str, name: str) -> int:
            raw = raw_client.hget(f"{pulse_settings.redis_prefix}:{{{customer}}}:profile", "view")
            if not raw:
                return -1
            assert isinstance(raw, bytes), f"expected raw bytes from Redis, got {type(raw)}"
            return int(parse_view(raw)[name])

        def settled() -> bool:
            # Every invoice arrives twice: counted once, dropped once as a duplicate.
            return all(field(c, "duplicate_events") == len(all_invoices[c]) for c in sample)

        wait_for(lambda: settled() or not flow.alive(), 90, "both replays processed")
        assert flow.alive(), flow.log_text()[-3000:]
        for customer in sample:
            assert field(customer, "orders") == len(invoices[customer])
            assert field(customer, "events_total") == len(all_invoices[customer])
        assert consume(pulse_settings, pulse_settings.events_dlq_topic, 1, timeout_s=2) == []
    finally:
        flow.stop()
