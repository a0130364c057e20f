"""Score quality: purchase propensity, churn risk and lifetime value, measured prequentially.

Order histories (a CSV of order lines, read through a column mapping) are
replayed strictly in time order through the engine (``Engine.apply``, the
profile state the dataflow keeps) and the scores (``engine.scores.Scorer``):
each snapshot is scored when it is taken and learned only once its label is
known (test, then train). Two sets of models go through the same snapshots:
Pulse's River models and the baselines (RFM-cell rates, historical run rate).
Reported per score: AUC and log loss (propensity, churn); mean absolute error,
root mean squared error and predicted/realised totals (lifetime value).

Lifetime value is also compared at one cut-off with the BG/NBD + Gamma-Gamma
model (``lifetimes``, the optional ``eval`` extra) fitted offline on the
transactions before the cut-off: every customer seen before it is scored as of
the cut-off and compared with their net spend in the ``--clv-days`` after it.

Data (``--datasets``):

- ``online-retail``: UCI Online Retail, the non-UK customers, shipped in
  ``../shared/data/online-retail/``. Daqing Chen (2015), "Online Retail", UCI
  Machine Learning Repository, https://doi.org/10.24432/C5BW33, CC BY 4.0.
- ``cdnow``: the CDNOW purchases (23,570 customers' CD purchases, 1997-01 to
  1998-06) shipped inside the ``lifetimes`` package (``datasets/CDNOW_master.txt``);
  Fader, Hardie and Lee (2005), "Counting your customers the easy way".

Any other order history plugs in with ``--csv FILE --mapping FILE.toml`` (see
``OrderMapping``) and ``--cutoff``.

    python -m benchmarks.score_quality                     # both data sets, about 3 minutes
    python -m benchmarks.score_quality --datasets online-retail --limit 10000
    python -m benchmarks.score_quality --csv orders.csv --mapping orders.toml \\
        --cutoff 2024-01-01 --clv-days 90
"""

from __future__ import annotations

import argparse
import csv
import heapq
import importlib.util
import math
import time
import tomllib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from benchmarks.common import print_table, write_json
from engine import events as ev
from engine.customer import Engine
from engine.profile import CustomerState
from engine.scores import (
    CLV,
    TASKS,
    CustomerScores,
    Example,
    ScoreModels,
    Scorer,
    ScoreSettings,
    features,
)
from engine.scores.models import describe

REPO = Path(__file__).resolve().parent.parent
ONLINE_RETAIL = REPO.parent / "shared" / "data" / "online-retail" / "online_retail_non_uk.csv"
DAY_S = 86400.0


# ---------------------------------------------------------------- input


@dataclass(frozen=True)
class OrderMapping:
    """How the rows of an order-line file become orders (``--mapping FILE.toml``).

    ```toml
    delimiter = ","                       # or "whitespace"
    timestamp_format = "%m/%d/%Y %H:%M"   # strptime format; absent: ISO 8601
    timezone = "Europe/London"            # zone of naive timestamps
    refund_prefix = "C"                   # order ids starting with it are refunds (optional)
    [columns]
    customer = "CustomerID"
    timestamp = "InvoiceDate"
    order = "InvoiceNo"       # optional: consecutive rows with one id are one order;
                              # absent: a customer's rows with one timestamp are one order
    amount = "Total"          # a row's value, or quantity x price:
    quantity = "Quantity"
    price = "UnitPrice"
    ```

    A row's value counts as its absolute amount (refund lines carry negative
    quantities); a refund takes back what its rows add up to.
    """

    customer: str
    timestamp: str
    order: str | None = None
    amount: str | None = None
    quantity: str | None = None
    price: str | None = None
    delimiter: str = ","
    timestamp_format: str | None = None
    timezone: str = "UTC"
    refund_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.amount is None and (self.quantity is None or self.price is None):
            raise ValueError("the mapping needs an amount column, or quantity and price")

    @classmethod
    def load(cls, path: Path) -> OrderMapping:
        data = tomllib.loads(path.read_text())
        columns = data.pop("columns", None)
        if not isinstance(columns, dict):
            raise SystemExit(f"{path}: needs a [columns] table (see OrderMapping)")
        known = {"delimiter", "timestamp_format", "timezone", "refund_prefix"}
        unknown = set(data) - known
        if unknown:
            raise SystemExit(f"{path}: unknown keys {sorted(unknown)}")
        try:
            return cls(**columns, **data)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"{path}: {exc}") from None


PRESETS: dict[str, OrderMapping] = {
    "online-retail": OrderMapping(
        customer="CustomerID",
        timestamp="InvoiceDate",
        order="InvoiceNo",
        quantity="Quantity",
        price="UnitPrice",
        timestamp_format="%m/%d/%Y %H:%M",
        timezone="Europe/London",
        refund_prefix="C",
    ),
    "cdnow": OrderMapping(
        customer="customer_id",
        timestamp="date",
        amount="dollar_value",
        delimiter="whitespace",
        timestamp_format="%Y%m%d",
    ),
}


@dataclass(frozen=True)
class Dataset:
    name: str
    path: Path
    mapping: OrderMapping
    cutoff: datetime  # the lifetime-value comparison's calibration end
    clv_days: float
    source: str


def cdnow_path() -> Path | None:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "CDNOW_master.txt"
    return path if path.exists() else None


def datasets(names: list[str]) -> list[Dataset]:
    out = []
    for name in names:
        if name == "online-retail":
            # 2010-12-01 to 2011-12-09: a quarter after the cut-off is observed.
            out.append(
                Dataset(
                    name,
                    ONLINE_RETAIL,
                    PRESETS[name],
                    datetime(2011, 9, 9, tzinfo=UTC),
                    91.0,
                    "Daqing Chen (2015), Online Retail, UCI Machine Learning Repository, "
                    "https://doi.org/10.24432/C5BW33 (CC BY 4.0); non-UK customers",
                )
            )
        elif name == "cdnow":
            path = cdnow_path()
            if path is None:
                print("cdnow: skipped, `lifetimes` is not installed (pip install -e '.[eval]')")
                continue
            # 1997-01-01 to 1998-06-30: a year of calibration, the last 181 days held out.
            out.append(
                Dataset(
                    name,
                    path,
                    PRESETS[name],
                    datetime(1998, 1, 1, tzinfo=UTC),
                    181.0,
                    "CDNOW purchases as shipped in lifetimes (datasets/CDNOW_master.txt); "
                    "Fader, Hardie and Lee (2005)",
                )
            )
        else:
            raise SystemExit(f"unknown data set {name!r} (online-retail, cdnow, or --csv)")
    return out


@dataclass
class Order:
    customer: str
    ts: float
    order_id: str
    amount: float
    refund: bool
    row: int  # first row, for a stable order among equal times


def _rows(path: Path, mapping: OrderMapping) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        if mapping.delimiter == "whitespace":
            header = fh.readline().split()
            for n, line in enumerate(fh, start=2):
                values = line.split()
                if values:
                    yield n, dict(zip(header, values, strict=False))
        else:
            yield from enumerate(csv.DictReader(fh, delimiter=mapping.delimiter), start=2)


def read_orders(path: Path, mapping: OrderMapping, limit: int | None = None) -> list[Order]:
    """The file's orders and refunds, sorted by time (then by file position)."""
    zone = ZoneInfo(mapping.timezone)
    orders: list[Order] = []
    key: tuple[str, str] | None = None
    for n, row in _rows(path, mapping):
        if limit is not None and n - 1 > limit:
            break
        customer = row[mapping.customer].strip().removesuffix(".0")
        if not customer:
            continue
        raw_ts = row[mapping.timestamp]
        try:
            parsed = (
                datetime.strptime(raw_ts, mapping.timestamp_format)
                if mapping.timestamp_format
                else datetime.fromisoformat(raw_ts)
            )
        except ValueError as exc:
            raise SystemExit(f"{path}:{n}: {mapping.timestamp} {raw_ts!r}: {exc}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
        ts = parsed.timestamp()
        if mapping.amount is not None:
            value = abs(float(row[mapping.amount]))
        else:
            assert mapping.quantity is not None and mapping.price is not None
            value = abs(float(row[mapping.quantity])) * float(row[mapping.price])
        order_id = row[mapping.order] if mapping.order else f"{customer}@{raw_ts}"
        this = (customer, order_id)
        if this == key and orders:
            orders[-1].amount += value
            continue
        key = this
        refund = bool(mapping.refund_prefix) and order_id.startswith(mapping.refund_prefix or "")
        orders.append(Order(customer, ts, order_id, value, refund, n))
    orders.sort(key=lambda o: (o.ts, o.row))
    for o in orders:
        o.amount = round(o.amount, 2)
    return orders


def to_event(order: Order) -> ev.BaseEvent:
    stamp = datetime.fromtimestamp(order.ts, tz=UTC)
    if order.refund:
        return ev.OrderRefunded(
            event_id=f"r-{order.order_id}-{order.row}",
            customer_id=order.customer,
            timestamp=stamp,
            order_id=order.order_id[1:] or order.order_id,
            amount=order.amount,
        )
    return ev.OrderPlaced(
        event_id=f"o-{order.order_id}-{order.row}",
        customer_id=order.customer,
        timestamp=stamp,
        order_id=order.order_id,
        total=order.amount,
        currency="USD",
    )


# ---------------------------------------------------------------- metrics


def auc(ys: list[float], ps: list[float]) -> float:
    """Exact ROC AUC (ties count half), by ranks."""
    pairs = sorted(zip(ps, ys, strict=True))
    pos = sum(1 for y in ys if y)
    neg = len(ys) - pos
    if not pos or not neg:
        return float("nan")
    rank_sum = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mean_rank = (i + j + 1) / 2.0  # ranks i+1 .. j
        rank_sum += mean_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def log_loss(ys: list[float], ps: list[float]) -> float:
    total = 0.0
    for y, p in zip(ys, ps, strict=True):
        p = min(1 - 1e-15, max(1e-15, p))
        total -= math.log(p) if y else math.log(1 - p)
    return total / len(ys) if ys else float("nan")


def spend_errors(ys: list[float], ps: list[float]) -> dict[str, float]:
    n = len(ys)
    if not n:
        return {"n": 0}
    order = sorted(range(n), key=lambda i: -ps[i])
    top = order[: max(1, n // 5)]
    realised = sum(ys)
    return {
        "n": n,
        "mae": sum(abs(p - y) for y, p in zip(ys, ps, strict=True)) / n,
        "rmse": math.sqrt(sum((p - y) ** 2 for y, p in zip(ys, ps, strict=True)) / n),
        "mean_realised": realised / n,
        "mean_predicted": sum(ps) / n,
        "total_ratio": sum(ps) / realised if realised else float("nan"),
        # Share of the realised spend that the top fifth by prediction made.
        "top20_capture": sum(ys[i] for i in top) / realised if realised else float("nan"),
    }


def classification(examples: list[Example]) -> dict[str, Any]:
    ys = [e.y for e in examples]
    ps = [e.score for e in examples]
    at_events = [e for e in examples if e.at_event]
    return {
        "n": len(ys),
        "positives": sum(1 for y in ys if y),
        "auc": auc(ys, ps),
        "log_loss": log_loss(ys, ps),
        "auc_at_events": auc([e.y for e in at_events], [e.score for e in at_events]),
        "n_at_events": len(at_events),
    }


# ---------------------------------------------------------------- the replay


@dataclass
class Run:
    """One model family's scorer and the examples it produced."""

    name: str
    scorer: Scorer
    scores: dict[str, CustomerScores] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)
    seconds_event: float = 0.0
    seconds_wakeup: float = 0.0
    wakeups: int = 0


def replay(
    dataset: Dataset, settings: ScoreSettings, limit: int | None, quiet: bool = False
) -> dict[str, Any]:
    orders = read_orders(dataset.path, dataset.mapping, limit)
    if not orders:
        raise SystemExit(f"{dataset.name}: no orders read from {dataset.path}")
    engine = Engine()
    runs = [
        # What the dataflow serves, and the two model families it is made of.
        Run("pulse", Scorer(settings, ScoreModels.served(settings))),
        Run("sgd", Scorer(settings, ScoreModels.river(settings))),
        Run("bayes", Scorer(settings, ScoreModels.bayes(settings))),
        Run("baseline", Scorer(settings, ScoreModels.baseline(settings))),
    ]
    states: dict[str, CustomerState] = {}
    wakeups: list[tuple[float, str]] = []
    cutoff = dataset.cutoff.timestamp()
    at_cutoff: dict[str, dict[str, float]] | None = None
    first = orders[0].ts
    last = orders[-1].ts
    step = max(1, len(orders) // 10)
    started = time.perf_counter()

    def wake(customer: str) -> None:
        due = Scorer.next_due(runs[0].scores.get(customer))
        if due is not None:
            heapq.heappush(wakeups, (due, customer))

    def fire_until(until: float) -> None:
        # Every customer's pending windows that closed before ``until``, in time order.
        while wakeups and wakeups[0][0] < until:
            due, customer = heapq.heappop(wakeups)
            if Scorer.next_due(runs[0].scores.get(customer)) != due:
                continue  # stale: resolved by an order or already fired
            for run in runs:
                t0 = time.perf_counter()
                run.examples.extend(
                    run.scorer.fire_due(run.scores.get(customer), states[customer], due)
                )
                run.seconds_wakeup += time.perf_counter() - t0
                run.wakeups += 1
            wake(customer)

    for n, order in enumerate(orders, start=1):
        event = to_event(order)
        ts = event.ts
        if at_cutoff is None and ts >= cutoff:
            fire_until(cutoff)
            at_cutoff = score_at(cutoff, states, runs)
        fire_until(ts)
        customer = order.customer
        state = states.get(customer)
        for run in runs:
            t0 = time.perf_counter()
            run.examples.extend(run.scorer.fire_due(run.scores.get(customer), state, ts))
            run.seconds_event += time.perf_counter() - t0
        state, _ = engine.apply(state, event)
        states[customer] = state
        for run in runs:
            t0 = time.perf_counter()
            scores, more = run.scorer.on_event(run.scores.get(customer), state, event)
            run.seconds_event += time.perf_counter() - t0
            run.scores[customer] = scores
            run.examples.extend(more)
        wake(customer)
        if not quiet and (n % step == 0 or n == len(orders)):
            day = datetime.fromtimestamp(ts, tz=UTC).date()
            print(
                f"  {dataset.name}: {n:,}/{len(orders):,} orders (to {day}), "
                f"{len(runs[0].examples):,} labels, {time.perf_counter() - started:.1f} s",
                flush=True,
            )
    fire_until(last + 1.0)  # windows that closed within the data; later ones stay censored
    pulse, *others = runs
    if any(len(pulse.examples) != len(other.examples) for other in others):
        raise AssertionError("the model families saw different snapshots")
    result: dict[str, Any] = {
        "dataset": dataset.name,
        "source": dataset.source,
        "path": str(dataset.path),
        "orders": len(orders),
        "customers": len(states),
        "from": datetime.fromtimestamp(first, tz=UTC).isoformat(),
        "to": datetime.fromtimestamp(last, tz=UTC).isoformat(),
        "settings": msgspec.to_builtins(settings),
        "prequential": {},
        "models": {run.name: [describe(m) for m in run.scorer.models.by_task()] for run in runs},
        "cost": {
            "events": len(orders),
            "us_per_event": pulse.seconds_event / len(orders) * 1e6,
            "wakeups": pulse.wakeups,
            "us_per_wakeup": pulse.seconds_wakeup / pulse.wakeups * 1e6 if pulse.wakeups else 0,
            "examples_learned": len(pulse.examples),
        },
    }
    for task, name in enumerate(TASKS):
        result["prequential"][name] = {}
        for run in runs:
            mine = [e for e in run.examples if e.task == task]
            if task == CLV:
                metrics = spend_errors([e.y for e in mine], [e.score for e in mine])
            else:
                metrics = classification(mine)
            result["prequential"][name][run.name] = metrics
    if at_cutoff is not None:
        result["clv_at_cutoff"] = clv_at_cutoff(dataset, orders, at_cutoff, quiet)
    return result


def score_at(
    cutoff: float, states: dict[str, CustomerState], runs: list[Run]
) -> dict[str, dict[str, float]]:
    """Every customer seen so far, scored for lifetime value as of ``cutoff``."""
    out: dict[str, dict[str, float]] = {}
    for customer, state in states.items():
        x = features(state, cutoff)
        out[customer] = {run.name: run.scorer.models.clv.predict(x) for run in runs}
    return out


def clv_at_cutoff(
    dataset: Dataset,
    orders: list[Order],
    predicted: dict[str, dict[str, float]],
    quiet: bool,
) -> dict[str, Any]:
    cutoff = dataset.cutoff.timestamp()
    end = cutoff + dataset.clv_days * DAY_S
    realised = dict.fromkeys(predicted, 0.0)
    for o in orders:
        if o.customer in realised and cutoff <= o.ts < end:
            realised[o.customer] += -o.amount if o.refund else o.amount
    customers = sorted(predicted)
    ys = [max(0.0, realised[c]) for c in customers]
    out: dict[str, Any] = {
        "cutoff": dataset.cutoff.isoformat(),
        "horizon_days": dataset.clv_days,
        "observed_to": datetime.fromtimestamp(orders[-1].ts, tz=UTC).isoformat(),
        "customers": len(customers),
    }
    for name in ("pulse", "sgd", "bayes", "baseline"):
        out[name] = spend_errors(ys, [predicted[c][name] for c in customers])
    bgnbd = bg_nbd_gamma_gamma(orders, cutoff, dataset.clv_days, customers, quiet)
    if bgnbd is None:
        out["bg_nbd"] = {"skipped": "lifetimes is not installed (pip install -e '.[eval]')"}
    else:
        preds, params = bgnbd
        out["bg_nbd"] = {**spend_errors(ys, [preds[c] for c in customers]), "params": params}
    return out


def bg_nbd_gamma_gamma(
    orders: list[Order], cutoff: float, horizon_days: float, customers: list[str], quiet: bool
) -> tuple[dict[str, float], dict[str, float]] | None:
    """BG/NBD + Gamma-Gamma (lifetimes) fitted on the orders before ``cutoff``:
    each customer's expected spend in the ``horizon_days`` after it."""
    try:
        import pandas as pd
        from lifetimes import BetaGeoFitter, GammaGammaFitter
        from lifetimes.utils import ConvergenceError, summary_data_from_transaction_data
    except ImportError:
        return None
    rows = [
        (o.customer, datetime.fromtimestamp(o.ts, tz=UTC).date(), o.amount)
        for o in orders
        if o.ts < cutoff and not o.refund
    ]
    tx = pd.DataFrame(rows, columns=["customer", "date", "amount"])
    tx["date"] = pd.to_datetime(tx["date"])
    observed_end = pd.Timestamp(datetime.fromtimestamp(cutoff - DAY_S, tz=UTC).date())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifetimes predates pandas 3's deprecations
        summary = summary_data_from_transaction_data(
            tx,
            "customer",
            "date",
            monetary_value_col="amount",
            observation_period_end=observed_end,
            freq="D",
        )
        # Unpenalised, as the model is published; lifetimes' own advice when
        # the fit does not converge (small data) is a small penalty.
        for penalizer in (0.0, 0.001, 0.01, 0.1):
            try:
                bgf = BetaGeoFitter(penalizer_coef=penalizer)
                bgf.fit(summary["frequency"], summary["recency"], summary["T"])
                repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
                ggf = GammaGammaFitter(penalizer_coef=penalizer)
                ggf.fit(repeat["frequency"], repeat["monetary_value"])
                break
            except ConvergenceError:
                if penalizer == 0.1:
                    raise
        purchases = bgf.conditional_expected_number_of_purchases_up_to_time(
            horizon_days, summary["frequency"], summary["recency"], summary["T"]
        )
        value = ggf.conditional_expected_average_profit(
            summary["frequency"], summary["monetary_value"].clip(lower=0.0)
        )
    spend = (purchases * value).to_dict()
    params = {f"bg_nbd_{k}": float(v) for k, v in bgf.params_.items()}
    params["penalizer"] = penalizer
    params.update({f"gamma_gamma_{k}": float(v) for k, v in ggf.params_.items()})
    if not quiet:
        print(f"  BG/NBD + Gamma-Gamma fitted on {len(summary):,} customers", flush=True)
    # A customer the calibration never saw (no order before the cut-off) gets 0.
    return {c: float(spend.get(c, 0.0)) for c in customers}, params


# ---------------------------------------------------------------- output


def print_results(results: list[dict[str, Any]]) -> None:
    rows: list[list[Any]] = []
    for r in results:
        for task in ("propensity", "churn"):
            for model in ("pulse", "sgd", "bayes", "baseline"):
                m = r["prequential"][task][model]
                rows.append(
                    [
                        r["dataset"],
                        task,
                        model,
                        m["n"],
                        f"{m['positives'] / m['n']:.1%}" if m["n"] else "-",
                        f"{m['auc']:.3f}",
                        f"{m['log_loss']:.3f}",
                        f"{m['auc_at_events']:.3f}",
                    ]
                )
    print_table(
        "Propensity and churn, prequential (each snapshot scored before its label was known)",
        ["data", "score", "model", "labels", "positive", "AUC", "log loss", "AUC at events"],
        rows,
    )
    rows = []
    for r in results:
        for model in ("pulse", "sgd", "bayes", "baseline"):
            m = r["prequential"]["clv"][model]
            if m["n"]:
                rows.append(_spend_row(r["dataset"], "rolling", model, m))
        cut = r.get("clv_at_cutoff")
        if cut:
            where = f"at {cut['cutoff'][:10]}"
            for model in ("pulse", "sgd", "bayes", "baseline", "bg_nbd"):
                m = cut[model]
                if "skipped" not in m:
                    rows.append(_spend_row(r["dataset"], where, model, m))
    print_table(
        "Lifetime value: predicted spend over the horizon against realised net spend",
        ["data", "when", "model", "n", "MAE", "RMSE", "realised/cust", "pred/real", "top-20%"],
        rows,
    )
    rows = [
        [
            r["dataset"],
            r["cost"]["events"],
            f"{r['cost']['us_per_event']:.1f}",
            r["cost"]["wakeups"],
            f"{r['cost']['us_per_wakeup']:.1f}",
            r["cost"]["examples_learned"],
        ]
        for r in results
    ]
    print_table(
        "Cost of Pulse's scores (fire_due + on_event, features + 3 predictions + learning)",
        ["data", "events", "us/event", "wake-ups", "us/wake-up", "labels learned"],
        rows,
    )


def _spend_row(data: str, when: str, model: str, m: dict[str, Any]) -> list[Any]:
    return [
        data,
        when,
        model,
        m["n"],
        f"{m['mae']:.2f}",
        f"{m['rmse']:.2f}",
        f"{m['mean_realised']:.2f}",
        f"{m['total_ratio']:.2f}",
        f"{m['top20_capture']:.1%}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.score_quality",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Data: UCI Online Retail (Daqing Chen 2015, doi:10.24432/C5BW33, CC BY 4.0) "
        "and CDNOW (inside lifetimes).",
    )
    parser.add_argument(
        "--datasets",
        default="online-retail,cdnow",
        help="comma-separated: online-retail, cdnow (default both)",
    )
    parser.add_argument("--csv", type=Path, help="another order history (with --mapping)")
    parser.add_argument("--mapping", type=Path, help="TOML column mapping for --csv")
    parser.add_argument("--cutoff", help="--csv: the lifetime-value comparison's cut-off date")
    parser.add_argument("--limit", type=int, help="read only the first N rows of each file")
    parser.add_argument("--propensity-days", type=float, default=7.0)
    parser.add_argument("--churn-days", type=float, default=90.0)
    parser.add_argument(
        "--clv-days", type=float, help="lifetime-value horizon (default per data set: 91, 181)"
    )
    parser.add_argument("--clv-pending", type=int, default=1)
    parser.add_argument("--max-idle-days", type=float, default=365.0)
    parser.add_argument("--output", default="score_quality", help="results/<name>.json")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)

    if args.csv is not None:
        if args.mapping is None or args.cutoff is None:
            parser.error("--csv needs --mapping and --cutoff")
        cutoff = datetime.fromisoformat(args.cutoff)
        if cutoff.tzinfo is None:
            cutoff = cutoff.replace(tzinfo=UTC)
        chosen = [
            Dataset(
                args.csv.stem,
                args.csv,
                OrderMapping.load(args.mapping),
                cutoff,
                args.clv_days or 90.0,
                str(args.csv),
            )
        ]
    else:
        chosen = datasets([d.strip() for d in args.datasets.split(",") if d.strip()])
    results = []
    for dataset in chosen:
        if args.clv_days:
            dataset = replace(dataset, clv_days=args.clv_days)
        settings = ScoreSettings(
            propensity_days=args.propensity_days,
            churn_days=args.churn_days,
            clv_days=dataset.clv_days,
            clv_pending=args.clv_pending,
            max_idle_days=args.max_idle_days,
        )
        if not args.quiet:
            print(f"{dataset.name}: {dataset.path}", flush=True)
        results.append(replay(dataset, settings, args.limit, args.quiet))
    if not results:
        return 1
    print_results(results)
    path = write_json(args.output, {"results": results, "limit": args.limit})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
