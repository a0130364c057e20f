"""Prequential replay of a public data set: each event is first predicted, then learnt.

Shared by every quality report (``benchmarks.quality --report ...``): the
recommender's here (``benchmarks.quality_recs``), and scores or others
later, each as an ``Evaluator``. The loop reads a CSV of interactions through
a column mapping (``Columns``), turns the rows into Pulse events (order lines
sharing a basket id become one ``order_placed``), and feeds them strictly in
time order. For each event every evaluator first ``test``s (predicts, with
what it learnt from earlier events only), then the customer's profile is
updated through the engine's own ``Engine.apply``, then every evaluator
``learn``s. Nothing an evaluator sees at ``test`` comes from the event itself
or anything after it.

A mapping is a small TOML file (``benchmarks/mappings/online_retail.toml`` is
the default):

```toml
time_format = "%m/%d/%Y %H:%M"   # strptime, or "epoch_s" / "epoch_ms"; ISO 8601 if unset
timezone = "Europe/London"       # of naive times
cancelled_prefix = "C"           # baskets whose id starts with it are cancellations
exclude_items = "^[^0-9]*$"      # regex of item codes that are not products
[columns]                        # what = CSV column
customer = "CustomerID"
item = "StockCode"
time = "InvoiceDate"
basket = "InvoiceNo"             # optional: without it each order row is an order
quantity = "Quantity"            # optional
price = "UnitPrice"              # optional
name = "Description"             # optional
category = "Category"            # optional: without it, derived from name (see below)
kind = "event"                   # optional: without it every row is an order line
[kinds]                          # with `kind`: its values -> Pulse event types
view = "product_view"
addtocart = "add_to_cart"
transaction = "order_placed"
```

With no category column the category is derived from the item name by
``pulse.replay.retail_category``: the first of a fixed list of keywords found
in it (BAG -> bags, CANDLE -> candles, MUG or CUP -> mugs, ...), else
``other``; the same rule ``pulse replay --preset online-retail`` uses.
"""

from __future__ import annotations

import csv
import re
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from engine import events as ev
from engine.customer import Engine
from engine.profile import CustomerState
from pulse.replay import retail_category

MAPPINGS = Path(__file__).resolve().parent / "mappings"
DEFAULT_MAPPING = MAPPINGS / "online_retail.toml"
DEFAULT_DATA = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "online-retail"
    / "online_retail_non_uk.csv"
)

_COLUMN_NAMES = (
    "customer",
    "item",
    "time",
    "basket",
    "quantity",
    "price",
    "name",
    "category",
    "kind",
)
_EVENT_TYPES = ("product_view", "add_to_cart", "order_placed")


class MappingError(ValueError):
    """The mapping or the data does not fit; the message says where."""


@dataclass(frozen=True)
class Columns:
    """How rows of one CSV become Pulse events (see the module's docstring)."""

    customer: str
    item: str
    time: str
    basket: str | None = None
    quantity: str | None = None
    price: str | None = None
    name: str | None = None
    category: str | None = None
    kind: str | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    time_format: str | None = None
    timezone: str = "UTC"
    cancelled_prefix: str | None = None
    exclude_items: str | None = None

    @classmethod
    def load(cls, path: Path, overrides: dict[str, str] | None = None) -> Columns:
        """A mapping file, with single columns replaced (``--columns item=SKU,...``)."""
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise MappingError(f"mapping {path}: {exc}") from None
        known = {"columns", "kinds", "time_format", "timezone", "cancelled_prefix", "exclude_items"}
        unknown = set(data) - known
        if unknown:
            raise MappingError(f"mapping {path}: unknown keys {sorted(unknown)}")
        columns = {str(k): str(v) for k, v in dict(data.get("columns", {})).items()}
        columns.update(overrides or {})
        bad = set(columns) - set(_COLUMN_NAMES)
        if bad:
            raise MappingError(
                f"mapping {path}: unknown columns {sorted(bad)} (known: {', '.join(_COLUMN_NAMES)})"
            )
        missing = {"customer", "item", "time"} - set(columns)
        if missing:
            raise MappingError(f"mapping {path}: [columns] needs {sorted(missing)}")
        kinds = {str(k): str(v) for k, v in dict(data.get("kinds", {})).items()}
        wrong = {v for v in kinds.values() if v not in _EVENT_TYPES}
        if wrong:
            raise MappingError(f"mapping {path}: [kinds] values must be in {_EVENT_TYPES}")
        return cls(
            **columns,
            kinds=kinds,
            time_format=data.get("time_format"),
            timezone=data.get("timezone", "UTC"),
            cancelled_prefix=data.get("cancelled_prefix"),
            exclude_items=data.get("exclude_items"),
        )


def parse_overrides(text: str | None) -> dict[str, str]:
    """``item=SKU,customer=User`` as a dict; a MappingError names a malformed part."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, column = part.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise MappingError(f"--columns: {part!r} is not name=Column")
        out[name.strip()] = column.strip()
    return out


# Rows to events -----------------------------------------------------------------


@dataclass
class Row:
    line: int
    customer: str
    item: str
    ts: float
    kind: str
    basket: str | None
    quantity: int
    price: float
    name: str | None
    category: str | None


def read_rows(path: Path, columns: Columns, limit: int | None = None) -> Iterator[Row]:
    """The CSV's rows as typed values, in file order; rows without a customer or an
    item, excluded items and unknown kinds are skipped."""
    exclude = re.compile(columns.exclude_items) if columns.exclude_items else None
    zone = ZoneInfo(columns.timezone)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        needed = [c for c in _mapped(columns) if c]
        absent = [c for c in needed if reader.fieldnames is None or c not in reader.fieldnames]
        if absent:
            raise MappingError(f"{path}: no column {absent} (header: {reader.fieldnames})")
        for line, raw in enumerate(reader, start=2):
            if limit is not None and line - 1 > limit:
                return
            customer = raw[columns.customer].strip().removesuffix(".0")
            item = raw[columns.item].strip()
            if not customer or not item or (exclude is not None and exclude.search(item)):
                continue
            kind = "order_placed"
            if columns.kind:
                mapped = columns.kinds.get(raw[columns.kind].strip())
                if mapped is None:
                    continue
                kind = mapped
            try:
                ts = _epoch(raw[columns.time], columns.time_format, zone)
                quantity = int(float(raw[columns.quantity])) if columns.quantity else 1
                price = float(raw[columns.price]) if columns.price else 0.0
            except ValueError as exc:
                raise MappingError(f"{path}:{line}: {exc}") from None
            name = raw[columns.name].strip() if columns.name else None
            category = raw[columns.category].strip() if columns.category else None
            if not category and name:
                category = retail_category(name)
            basket = raw[columns.basket].strip() if columns.basket else None
            yield Row(line, customer, item, ts, kind, basket, quantity, price, name, category)


def _mapped(columns: Columns) -> Sequence[str | None]:
    return [getattr(columns, n) for n in _COLUMN_NAMES]


def _epoch(value: str, fmt: str | None, zone: ZoneInfo) -> float:
    value = value.strip()
    if fmt == "epoch_s":
        return float(value)
    if fmt == "epoch_ms":
        return float(value) / 1000.0
    parsed = datetime.strptime(value, fmt) if fmt else datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.timestamp()


def events(rows: Iterable[Row], columns: Columns) -> Iterator[ev.BaseEvent]:
    """Pulse events from rows: consecutive order lines of one basket (and customer)
    become one order; a cancelled basket becomes a refund of its amount; views and
    cart adds are one event each. Stably sorted by time, so ties keep file order."""
    out: list[ev.BaseEvent] = []
    basket: list[Row] = []
    for row in rows:
        if row.kind == "order_placed":
            if basket and (row.basket is None or (row.basket, row.customer) != _key(basket[0])):
                out.append(_order(basket, columns))
                basket = []
            basket.append(row)
            continue
        out.append(_interaction(row))
    if basket:
        out.append(_order(basket, columns))
    out.sort(key=lambda e: e.ts)
    return iter(out)


def _key(row: Row) -> tuple[str | None, str]:
    return (row.basket, row.customer)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _order(rows: list[Row], columns: Columns) -> ev.BaseEvent:
    first = rows[0]
    basket_id = first.basket or f"row{first.line}"
    common: dict[str, Any] = {
        "event_id": f"order-{basket_id}-{first.line}",
        "customer_id": first.customer,
        "timestamp": _at(first.ts),
    }
    amount = round(sum(abs(r.quantity) * max(r.price, 0.0) for r in rows), 2)
    prefix = columns.cancelled_prefix
    if (prefix and basket_id.startswith(prefix)) or all(r.quantity <= 0 for r in rows):
        return ev.OrderRefunded(
            **common, order_id=basket_id.removeprefix(prefix or ""), amount=amount
        )
    items = tuple(
        ev.LineItem(
            sku=r.item,
            price=max(r.price, 0.0),
            quantity=min(r.quantity, 100_000),
            category=r.category,
            name=r.name,
        )
        for r in rows
        if r.quantity > 0
    )
    return ev.OrderPlaced(**common, order_id=basket_id, total=amount, items=items)


def _interaction(row: Row) -> ev.BaseEvent:
    common: dict[str, Any] = {
        "event_id": f"row-{row.line}",
        "customer_id": row.customer,
        "timestamp": _at(row.ts),
    }
    if row.kind == "add_to_cart":
        return ev.AddToCart(
            **common,
            sku=row.item,
            price=max(row.price, 0.0),
            quantity=max(1, min(row.quantity, 100_000)),
            category=row.category,
            name=row.name,
        )
    return ev.ProductView(
        **common, sku=row.item, category=row.category, price=row.price or None, name=row.name
    )


# The loop -------------------------------------------------------------------------


@dataclass
class Step:
    """One event as the evaluators see it: before ``learn``, ``state`` is the
    customer's profile before the event (None for a new customer); after, the
    profile with the event applied."""

    index: int
    event: ev.BaseEvent
    state: CustomerState | None
    orders_before: int  # the customer's orders before this event


class Evaluator(Protocol):
    """One quality report's models: predict on ``test``, learn on ``learn``."""

    def test(self, step: Step) -> None: ...

    def learn(self, step: Step) -> None: ...

    def finish(self, end_ts: float) -> None:
        """After the last event: settle what waits on the future (labels of a window)."""


@dataclass
class ReplayReport:
    events: int = 0
    customers: int = 0
    orders: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    seconds: float = 0.0
    by_type: dict[str, int] = field(default_factory=dict)


def replay(
    stream: Iterable[ev.BaseEvent],
    evaluators: Sequence[Evaluator],
    engine: Engine | None = None,
    progress_every_s: float = 5.0,
    out: Any = sys.stdout,
) -> ReplayReport:
    """Feed every event to every evaluator, test then learn, in the stream's order."""
    engine = engine or Engine()
    states: dict[str, CustomerState] = {}
    report = ReplayReport()
    started = last_print = time.monotonic()
    for index, event in enumerate(stream):
        key = event.customer_key
        state = states.get(key)
        orders = state.orders if state is not None else 0
        step = Step(index, event, state, orders)
        for evaluator in evaluators:
            evaluator.test(step)
        state, _effects = engine.apply(state, event)
        states[key] = state
        step.state = state
        for evaluator in evaluators:
            evaluator.learn(step)
        kind = ev.event_type(event)
        report.by_type[kind] = report.by_type.get(kind, 0) + 1
        report.orders += kind == "order_placed"
        report.first_ts = report.first_ts or event.ts
        report.last_ts = event.ts
        report.events += 1
        now = time.monotonic()
        if now - last_print >= progress_every_s:
            last_print = now
            day = _at(event.ts).date().isoformat()
            print(
                f"  {index + 1:,} events replayed (up to {day}), {now - started:.0f} s",
                file=out,
                flush=True,
            )
    for evaluator in evaluators:
        evaluator.finish(report.last_ts)
    report.customers = len(states)
    report.seconds = time.monotonic() - started
    return report
