"""Quality of Pulse's online models on real history, prequentially (test, then train).

Replays a public data set strictly in time order through the engine
(``benchmarks.prequential``): at every event each model first predicts, then
learns the event. Reports, one per ``--report``:

- ``recs``: HR@k and NDCG@k of Pulse's recommender against popularity alone
  and River's FunkMF alone, the truth being the products of each customer's
  next order (``benchmarks.quality_recs``), and the recommender's update cost
  per event (on this data, and on a synthetic stream of views, carts and
  orders, which this data lacks).

The default data is the UCI Online Retail file (Daqing Chen, "Online Retail",
UCI Machine Learning Repository, 2015, https://doi.org/10.24432/C5BW33,
CC BY 4.0; ``../shared/data/online-retail/``): 422 customers outside the UK,
2010-12 to 2011-12. Another CSV plugs in through a mapping file (see
``benchmarks/prequential.py`` and ``benchmarks/mappings/``).

    python -m benchmarks.quality                       # about a minute
    python -m benchmarks.quality --split-at 2011-06-01 # also before / from that day
    python -m benchmarks.quality --limit 5000 --report recs
    python -m benchmarks.quality --data FILE.csv --mapping FILE.toml [--columns item=SKU,...]

Prints a table and writes ``benchmarks/results/quality.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import quality_recs
from benchmarks.common import day, print_table, write_json
from benchmarks.prequential import (
    DEFAULT_DATA,
    DEFAULT_MAPPING,
    Columns,
    Evaluator,
    MappingError,
    ReplayReport,
    events,
    parse_overrides,
    read_rows,
    replay,
)


@dataclass(frozen=True)
class Report:
    """One ``--report``: its evaluator for the replay, then its tables and JSON."""

    make: Callable[[argparse.Namespace], Evaluator]
    summarise: Callable[[Any, ReplayReport, argparse.Namespace], dict[str, Any]]


def _recs(args: argparse.Namespace) -> Evaluator:
    methods: list[quality_recs.Method] = [
        quality_recs.PulseRecs(),
        quality_recs.Popularity(),
        quality_recs.PopularityLines(),
        quality_recs.FunkMF(),
    ]
    return quality_recs.RecsReport(methods, k=args.k, split_at=args.split_at)


def _recs_summary(
    evaluator: quality_recs.RecsReport, replay_report: ReplayReport, args: argparse.Namespace
) -> dict[str, Any]:
    cases = evaluator.cases()
    print_table(
        f"recommendations, prequential, context home (cases: {cases['returning']:,} orders of "
        f"returning customers, {cases['returning_new_items']:,} of them with items new to the "
        f"customer, {cases['first_order']:,} first orders)",
        evaluator.columns(),
        evaluator.rows(),
    )
    if evaluator.split_at is not None:
        day = datetime.fromtimestamp(evaluator.split_at, tz=UTC).date().isoformat()
        print_table(
            f"the same, returning customers' orders before {day} (Pulse's defaults were "
            f"chosen on these: {cases['returning_before']:,} orders) and from it on (held "
            f"out: {cases['returning_after']:,})",
            evaluator.columns(quality_recs.PERIOD_GROUPS),
            evaluator.rows(quality_recs.PERIOD_GROUPS),
        )
    out = evaluator.as_json()
    pulse = next(m for m in evaluator.methods if isinstance(m, quality_recs.PulseRecs))
    cost = pulse.cost()
    out["pulse_update_cost_this_data"] = cost
    rows: list[list[Any]] = [
        [f"{kind} (this data)", us] for kind, us in sorted(cost["us_per_event_by_type"].items())
    ]
    if not args.no_synthetic_cost:
        print("timing the recommender on the synthetic shopper stream ...", flush=True)
        synthetic = quality_recs.synthetic_cost()
        out["pulse_update_cost_synthetic"] = synthetic
        by_type = sorted(synthetic["us_per_event_by_type"].items())
        rows += [[f"{kind} (synthetic)", us] for kind, us in by_type]
        rows.append(["every event (synthetic)", synthetic["us_per_event"]])
        rows.append(
            [
                "every event (synthetic, CPU time of the whole stream, lists included)",
                synthetic["cpu_us_per_event_with_redis_stand_ins"],
            ]
        )
    print_table(
        "Pulse recommender update per event (customer items + relations + trends, µs, wall)",
        ["event", "µs"],
        rows,
    )
    print(
        f"ranking one request from its serving views (ranker.recommend): "
        f"{cost['recommend_us']:.0f} µs on average; whole methods per request: "
        + ", ".join(f"{name} {v['rank_us']:.0f} µs" for name, v in out["methods"].items())
    )
    returning = {n: v["returning"][f"hr@{args.k}"] for n, v in out["methods"].items()}
    ratios = {}
    for baseline in ("popularity", "popularity_lines"):
        ratio = returning["pulse"] / returning[baseline] if returning[baseline] else math.inf
        ratios[baseline] = ratio
        verdict = "met" if ratio >= 2.0 else "NOT met"
        print(
            f"Pulse HR@{args.k} / {baseline} HR@{args.k} (returning customers): {ratio:.2f} "
            f"(target at least 2: {verdict})"
        )
    out["pulse_over_popularity_hr"] = ratios
    return out


REPORTS: dict[str, Report] = {
    "recs": Report(_recs, _recs_summary),  # type: ignore[arg-type]
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV to replay")
    parser.add_argument(
        "--mapping",
        type=Path,
        default=DEFAULT_MAPPING,
        help=f"TOML column mapping of the CSV (default {DEFAULT_MAPPING.name})",
    )
    parser.add_argument(
        "--columns",
        default=None,
        metavar="NAME=COLUMN,...",
        help="override single columns of the mapping, e.g. item=SKU,customer=UserId",
    )
    parser.add_argument(
        "--report",
        default="recs",
        help=f"comma-separated reports to run: {', '.join(REPORTS)} (default recs)",
    )
    parser.add_argument("--k", type=int, default=10, help="list length for HR@k and NDCG@k")
    parser.add_argument("--limit", type=int, default=None, help="read only the first N rows")
    parser.add_argument(
        "--split-at",
        type=day,
        default=None,
        metavar="YYYY-MM-DD",
        help="also report returning customers' figures before and from this day (UTC)",
    )
    parser.add_argument(
        "--no-synthetic-cost",
        action="store_true",
        help="skip timing the recommender on a synthetic stream of views, carts and orders",
    )
    parser.add_argument("--out", default="quality", help="results file name under results/")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.report.split(",") if n.strip()]
    unknown = [n for n in names if n not in REPORTS]
    if unknown or not names:
        parser.error(f"--report: unknown {unknown}; choose from {', '.join(REPORTS)}")
    try:
        columns = Columns.load(args.mapping, parse_overrides(args.columns))
        started = time.monotonic()
        stream = list(events(read_rows(args.data, columns, args.limit), columns))
    except (MappingError, OSError) as exc:
        print(f"quality: {exc}", file=sys.stderr)
        return 2
    print(
        f"read {len(stream):,} events from {args.data} in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    evaluators = {name: REPORTS[name].make(args) for name in names}
    result = replay(stream, list(evaluators.values()))
    span = " to ".join(
        datetime.fromtimestamp(t, tz=UTC).date().isoformat()
        for t in (result.first_ts, result.last_ts)
    )
    print(
        f"replayed {result.events:,} events ({result.orders:,} orders) of "
        f"{result.customers:,} customers, {span}, in {result.seconds:.1f} s",
        flush=True,
    )
    payload: dict[str, Any] = {
        "benchmark": "quality",
        "data": str(args.data),
        "mapping": str(args.mapping),
        "columns": args.columns,
        "limit": args.limit,
        "replay": {
            "events": result.events,
            "orders": result.orders,
            "customers": result.customers,
            "first": result.first_ts,
            "last": result.last_ts,
            "seconds": result.seconds,
            "by_type": result.by_type,
        },
    }
    for name, evaluator in evaluators.items():
        payload[name] = REPORTS[name].summarise(evaluator, result, args)
    path = write_json(args.out, payload)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
