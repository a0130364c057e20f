"""The quality benchmark's replay (benchmarks/prequential.py, benchmarks/quality.py):
column mappings, test-before-learn order, and a run on a slice of the real file."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import orjson
import pytest

from benchmarks import common, quality, quality_recs
from benchmarks.prequential import (
    DEFAULT_DATA,
    DEFAULT_MAPPING,
    Columns,
    MappingError,
    Step,
    events,
    parse_overrides,
    read_rows,
    replay,
)
from engine import events as ev

needs_data = pytest.mark.skipif(not DEFAULT_DATA.exists(), reason=f"no {DEFAULT_DATA}")

INTERACTIONS = """\
ts,user,what,item,basket,cat
1700000000000,u1,view,A,,mugs
1700000060000,u1,addtocart,A,,mugs
1700000120000,u1,transaction,A,b1,mugs
1700000120000,u1,transaction,B,b1,bags
1700000100000,u2,view,B,,bags
1700000500000,u2,unknown-kind,B,,bags
"""


def write_mapping(path: Path) -> Path:
    path.write_text(
        """
time_format = "epoch_ms"
[columns]
customer = "user"
item = "item"
time = "ts"
basket = "basket"
kind = "what"
category = "cat"
[kinds]
view = "product_view"
addtocart = "add_to_cart"
transaction = "order_placed"
"""
    )
    return path


def test_a_mapping_with_kinds_gives_views_carts_and_orders_in_time_order(tmp_path: Path) -> None:
    data = tmp_path / "interactions.csv"
    data.write_text(INTERACTIONS)
    columns = Columns.load(write_mapping(tmp_path / "m.toml"))
    stream = list(events(read_rows(data, columns), columns))
    assert [ev.event_type(e) for e in stream] == [
        "product_view",
        "add_to_cart",
        "product_view",
        "order_placed",
    ]
    order = stream[-1]
    assert isinstance(order, ev.OrderPlaced)
    assert [(i.sku, i.category) for i in order.items] == [("A", "mugs"), ("B", "bags")]
    assert [e.ts for e in stream] == sorted(e.ts for e in stream)


def test_overrides_and_mapping_errors_name_the_problem(tmp_path: Path) -> None:
    assert parse_overrides("item=SKU, customer=User") == {"item": "SKU", "customer": "User"}
    with pytest.raises(MappingError, match="not name=Column"):
        parse_overrides("item")
    with pytest.raises(MappingError, match="unknown columns"):
        Columns.load(DEFAULT_MAPPING, {"colour": "Colour"})
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    columns = Columns.load(DEFAULT_MAPPING)
    with pytest.raises(MappingError, match="no column"):
        list(read_rows(data, columns))


class Recorder:
    """An evaluator that checks what it is shown, and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def test(self, step: Step) -> None:
        # At test time the profile has not seen this event yet.
        if step.state is not None:
            assert step.state.last_seen <= step.event.ts
            assert step.event.event_id not in step.state.seen_ids
        self.calls.append(("test", step.index))

    def learn(self, step: Step) -> None:
        assert step.state is not None and step.event.event_id in step.state.seen_ids
        self.calls.append(("learn", step.index))

    def finish(self, end_ts: float) -> None:
        self.calls.append(("finish", -1))


@needs_data
def test_every_event_is_tested_before_it_is_learnt_in_time_order() -> None:
    columns = Columns.load(DEFAULT_MAPPING)
    stream = list(events(read_rows(DEFAULT_DATA, columns, limit=2000), columns))
    recorder = Recorder()
    report = replay(stream, [recorder])
    expected = [(c, i) for i in range(report.events) for c in ("test", "learn")]
    assert recorder.calls == [*expected, ("finish", -1)]
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(stream))


@needs_data
def test_the_quality_replay_runs_on_a_slice_and_writes_its_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    args = ["--limit", "6000", "--no-synthetic-cost", "--out", "slice", "--split-at", "2011-03-01"]
    assert quality.main(args) == 0
    printed = capsys.readouterr().out
    assert "HR@10 returning" in printed
    result = orjson.loads((tmp_path / "slice.json").read_bytes())
    recs = result["recs"]
    assert set(recs["methods"]) == {"pulse", "popularity", "popularity_lines", "funk_mf"}
    cases = recs["cases"]
    assert cases["returning"] > 50
    assert cases["returning_before"] + cases["returning_after"] == cases["returning"]
    for method in recs["methods"].values():
        for group in quality_recs.GROUPS:
            hr, ndcg = method[group]["hr@10"], method[group]["ndcg@10"]
            assert 0.0 <= ndcg <= hr <= 1.0 or math.isnan(hr)
    # Even on a slice, reorders make Pulse beat plain popularity.
    returning = {name: m["returning"]["hr@10"] for name, m in recs["methods"].items()}
    assert returning["pulse"] > returning["popularity"]


def test_metrics_count_hits_and_discount_by_rank() -> None:
    metrics = quality_recs.Metrics(k=3)
    metrics.add(["a", "b", "c"], {"a"})
    metrics.add(["x", "y", "b"], {"b", "z"})
    metrics.add(["x"], {"q"})
    assert metrics.hr == pytest.approx(2 / 3)
    second = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert metrics.ndcg == pytest.approx((1.0 + second + 0.0) / 3)
