"""Ranking variants tried on the earlier part of the retail data only.

Replays the events strictly before ``--split-at`` (later events are never read
into the replay), prequentially as ``benchmarks.quality`` does, with Pulse's
recommender and variants of it side by side, and prints HR@k and NDCG@k of
returning customers' orders. A variant would be adopted only if it beat Pulse
here; ``python -m benchmarks.quality --split-at <the same day>`` then reports
it on the orders from that day on, which the choice never saw.

Variants (docs/recommendations.md, "Quality, measured"): both re-rank Pulse's
own 60 best with the customer's order history, which a prototype keeps here
(the engine's ``ShopperItems`` does not):

- ``cover``: HR counts an order with at least one item in the list, so pick
  the list greedily to cover as many of the customer's last 10 orders as
  possible (each weighted by a 180-day decay), rather than by the expected
  number of hits;
- ``due``: a reorder's score times ``1 - exp(-since / interval)``, the chance
  it is due by now if the customer buys it every ``interval`` (their mean gap
  between orders of it, or between any orders for an item bought once);
  ``due half``: times ``(1 + that) / 2``.

    python -m benchmarks.tune_recs --split-at 2011-06-01
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Container
from dataclasses import dataclass, field

from benchmarks import quality_recs
from benchmarks.common import day, print_table, write_json
from benchmarks.prequential import DEFAULT_DATA, DEFAULT_MAPPING, Columns, events, read_rows, replay
from engine import events as ev
from engine.profile import CustomerState
from engine.recs import ranker

DAY_S = 86400.0


@dataclass
class _History(quality_recs.PulseRecs):
    """Pulse, plus each customer's orders (time, products) and first purchase of each item."""

    orders: dict[str, list[tuple[float, frozenset[str]]]] = field(default_factory=dict)
    first: dict[tuple[str, str], float] = field(default_factory=dict)

    def learn(self, event: ev.BaseEvent, state: CustomerState) -> None:
        super().learn(event, state)
        if isinstance(event, ev.OrderPlaced) and event.items:
            key = event.customer_key
            skus = frozenset(line.sku for line in event.items)
            self.orders.setdefault(key, []).append((event.ts, skus))
            for sku in skus:
                self.first.setdefault((key, sku), event.ts)

    def base(
        self, customer: str, state: CustomerState | None, now: float
    ) -> list[ranker.Recommendation]:
        return self.recommend(customer, state, ranker.Request(k=60, now=now), self.policy)


@dataclass
class Cover(_History):
    kept: int = 10
    tau_days: float = 180.0

    def rank(
        self, customer: str, state: CustomerState | None, k: int,
        bought: Container[str] | None, now: float,
    ) -> list[str]:  # fmt: skip
        orders = self.orders.get(customer, [])[-self.kept :]
        if bought is not None or not orders:
            return super().rank(customer, state, k, bought, now)
        pool = [r.sku for r in self.base(customer, state, now)]
        weights = [math.exp(-(now - ts) / (self.tau_days * DAY_S)) for ts, _ in orders]
        covered = [False] * len(orders)
        chosen: list[str] = []
        while len(chosen) < k:
            best, gain = None, 0.0
            for sku in pool:
                g = sum(w for w, (_, skus), c in zip(weights, orders, covered, strict=True)
                        if not c and sku in skus)  # fmt: skip
                if g > gain + 1e-12:
                    best, gain = sku, g
            if best is None:
                break
            chosen.append(best)
            pool.remove(best)
            covered = [c or best in skus for c, (_, skus) in zip(covered, orders, strict=True)]
            if all(covered):
                covered = [False] * len(orders)  # a second item per order, and so on
        return chosen + pool[: k - len(chosen)]


@dataclass
class Due(_History):
    half: bool = False

    def rank(
        self, customer: str, state: CustomerState | None, k: int,
        bought: Container[str] | None, now: float,
    ) -> list[str]:  # fmt: skip
        orders = self.orders.get(customer, [])
        items = self.shoppers.get(customer)
        if bought is not None or items is None or len(orders) < 2:
            return super().rank(customer, state, k, bought, now)
        gap = (orders[-1][0] - orders[0][0]) / (len(orders) - 1) or DAY_S
        scored = []
        for r in self.base(customer, state, now):
            score = r.score
            b = items.bought.get(r.sku)
            if b is not None and r.reason == "bought_before":
                interval = gap
                if b.orders >= 2:
                    span = b.last_ts - self.first[(customer, r.sku)]
                    interval = max(span / (b.orders - 1), DAY_S)
                due = 1.0 - math.exp(-(now - b.last_ts) / interval)
                score *= (1.0 + due) / 2.0 if self.half else due
            scored.append((-score, r.sku))
        scored.sort()
        return [sku for _, sku in scored[:k]]


def retail_stream(split: float, after: bool = False) -> list[ev.BaseEvent]:
    """The Online Retail events before ``split`` (all of them with ``after``),
    in file order: what the tuning benchmarks replay."""
    columns = Columns.load(DEFAULT_MAPPING, {})
    return [e for e in events(read_rows(DEFAULT_DATA, columns), columns) if after or e.ts < split]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tune_recs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--split-at", required=True, type=day, help="YYYY-MM-DD: replay only before it"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default="tune_recs", help="results file name under results/")
    args = parser.parse_args(argv)
    split = args.split_at
    stream = retail_stream(split)
    methods: list[quality_recs.Method] = [
        quality_recs.PulseRecs(),
        Cover(name="cover"),
        Due(name="due"),
        Due(name="due half", half=True),
        quality_recs.Popularity(),
    ]
    report = quality_recs.RecsReport(methods, k=args.k)
    replay(stream, [report], progress_every_s=3600.0)
    groups = ("returning",)
    print_table(
        f"returning customers' orders before {args.split_at} only "
        f"({report.cases()['returning']:,} orders)",
        report.columns(groups),
        report.rows(groups),
    )
    path = write_json(args.out, {"benchmark": "tune_recs", "split_at": args.split_at,
                                 "recs": report.as_json()})  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
