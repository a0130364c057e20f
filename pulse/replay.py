"""``pulse replay FILE``: historical events into ``<prefix>.events``.

Reads JSON lines (one Pulse event per line) or CSV (one event per row through a
column mapping, or the ``online-retail`` preset that turns the UCI Online Retail
order lines into orders and refunds). Records are keyed by customer so one
customer's events stay ordered. Lines are sent as they are: the dataflow is the
one place that validates, and whatever is invalid lands on the dead-letter
topic with its reason. Paced with sleeps (``--rate``) or as fast as Kafka takes.
"""

from __future__ import annotations

import csv
import hashlib
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from confluent_kafka import KafkaException, Producer

from pulse.settings import Settings

Record = tuple[bytes | None, bytes]


class ReplayError(ValueError):
    """The input or its mapping is unusable; the message says where."""


@dataclass
class ReplayReport:
    read: int = 0
    sent: int = 0
    unkeyed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def key_of(raw: bytes) -> bytes | None:
    """The partition key of a JSON event, or None when it cannot be parsed."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("customer_id"), str) and obj["customer_id"]:
        return str(obj["customer_id"]).encode()
    if isinstance(obj.get("anonymous_id"), str) and obj["anonymous_id"]:
        return f"anon:{obj['anonymous_id']}".encode()
    return None


def json_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield line


# CSV ------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnMapping:
    """How one CSV row becomes one event (``--mapping FILE.toml``).

    ```toml
    type = "product_view"                 # event type for every row
    timestamp_format = "%m/%d/%Y %H:%M"   # strptime format of the timestamp column
    timezone = "Europe/London"            # zone of naive timestamps
    [fields]                              # event field = CSV column
    event_id = "EventId"                  # optional: else a hash of the row
    customer_id = "CustomerID"
    sku = "StockCode"
    price = "UnitPrice"
    timestamp = "InvoiceDate"
    ```
    """

    type: str
    fields: dict[str, str]
    timestamp_format: str | None = None
    timezone: str = "UTC"
    numeric: tuple[str, ...] = ("price", "total", "quantity", "results", "points", "amount")

    @classmethod
    def load(cls, path: Path) -> ColumnMapping:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ReplayError(f"mapping {path}: {exc}") from None
        unknown = set(data) - {"type", "fields", "timestamp_format", "timezone"}
        if unknown:
            raise ReplayError(f"mapping {path}: unknown keys {sorted(unknown)}")
        if not isinstance(data.get("type"), str) or not isinstance(data.get("fields"), dict):
            raise ReplayError(f'mapping {path}: needs `type = "..."` and a [fields] table')
        return cls(
            type=data["type"],
            fields={str(k): str(v) for k, v in data["fields"].items()},
            timestamp_format=data.get("timestamp_format"),
            timezone=data.get("timezone", "UTC"),
        )

    def event(self, row: dict[str, str], line: int) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for name, column in self.fields.items():
            if column not in row:
                raise ReplayError(f"line {line}: no column {column!r} (mapped to {name})")
            value: Any = row[column]
            try:
                if name == "timestamp":
                    value = _timestamp(value, self.timestamp_format, self.timezone)
                elif name in self.numeric and value != "":
                    numeric_float = "." in value or name in ("price", "total")
                    value = float(value) if numeric_float else int(value)
            except ValueError as exc:
                raise ReplayError(f"line {line}: column {column!r} ({name}): {exc}") from None
            out[name] = value
        if "event_id" not in out:
            digest = hashlib.blake2b(orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=12)
            out["event_id"] = f"csv-{digest.hexdigest()}"
        return out


def _timestamp(value: str, fmt: str | None, zone: str) -> str:
    parsed = datetime.strptime(value, fmt) if fmt else datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.isoformat()


def csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        yield from enumerate(csv.DictReader(fh), start=2)


def mapped_csv(path: Path, mapping: ColumnMapping) -> Iterator[bytes]:
    for line, row in csv_rows(path):
        yield orjson.dumps(mapping.event(row, line))


# The online-retail preset ------------------------------------------------------

# No product category in the data set: the first keyword of this list found in
# the description names it, else "other".
_CATEGORY_WORDS = (
    ("BAG", "bags"),
    ("CANDLE", "candles"),
    ("MUG", "mugs"),
    ("CUP", "mugs"),
    ("CARD", "stationery"),
    ("PAPER", "stationery"),
    ("NOTEBOOK", "stationery"),
    ("LIGHT", "lighting"),
    ("LANTERN", "lighting"),
    ("CLOCK", "home"),
    ("FRAME", "home"),
    ("CUSHION", "home"),
    ("SIGN", "home"),
    ("TEA", "kitchen"),
    ("CAKE", "kitchen"),
    ("LUNCH", "kitchen"),
    ("BOWL", "kitchen"),
    ("PLATE", "kitchen"),
    ("JAR", "kitchen"),
    ("BOTTLE", "kitchen"),
    ("GARDEN", "garden"),
    ("TOY", "toys"),
    ("DOLL", "toys"),
    ("GAME", "toys"),
    ("CHRISTMAS", "seasonal"),
    ("EASTER", "seasonal"),
    ("NECKLACE", "jewellery"),
    ("EARRINGS", "jewellery"),
    ("BRACELET", "jewellery"),
)


def retail_category(description: str) -> str:
    upper = description.upper()
    for word, category in _CATEGORY_WORDS:
        if word in upper:
            return category
    return "other"


def online_retail(path: Path) -> Iterator[bytes]:
    """UCI Online Retail: invoice lines grouped into order_placed / order_refunded.

    Rows are in time order and an invoice's lines are contiguous. Event ids are
    the invoice numbers, so replaying the file twice counts each order once.
    """
    current: list[dict[str, str]] = []
    for _line, row in csv_rows(path):
        if current and row["InvoiceNo"] != current[0]["InvoiceNo"]:
            yield orjson.dumps(_invoice_event(current))
            current = []
        current.append(row)
    if current:
        yield orjson.dumps(_invoice_event(current))


def _invoice_event(rows: list[dict[str, str]]) -> dict[str, Any]:
    first = rows[0]
    invoice = first["InvoiceNo"]
    customer = first["CustomerID"].removesuffix(".0")
    ts = _timestamp(first["InvoiceDate"], "%m/%d/%Y %H:%M", "Europe/London")
    base = {
        "event_id": f"inv-{invoice}",
        "customer_id": customer,
        "timestamp": ts,
        "channel": "web",
        "context": {"locale": first["Country"]},
    }
    amount = round(sum(abs(float(r["Quantity"])) * float(r["UnitPrice"]) for r in rows), 2)
    if invoice.startswith("C"):
        return {**base, "type": "order_refunded", "order_id": invoice[1:], "amount": amount}
    items = [
        {
            "sku": r["StockCode"],
            "name": r["Description"],
            "category": retail_category(r["Description"]),
            "price": float(r["UnitPrice"]),
            "quantity": int(r["Quantity"]),
        }
        for r in rows
        if int(r["Quantity"]) > 0
    ]
    return {
        **base,
        "type": "order_placed",
        "order_id": invoice,
        "total": amount,
        "currency": "GBP",
        "items": items,
    }


PRESETS: dict[str, Callable[[Path], Iterator[bytes]]] = {"online-retail": online_retail}


def source(path: Path, fmt: str, mapping: Path | None, preset: str | None) -> Iterator[bytes]:
    if not path.exists():
        raise ReplayError(f"{path}: no such file")
    if preset is not None:
        return PRESETS[preset](path)
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    if fmt == "jsonl":
        return json_lines(path)
    if mapping is None:
        raise ReplayError("CSV needs --mapping FILE.toml (or --preset); see `pulse replay --help`")
    return mapped_csv(path, ColumnMapping.load(mapping))


def replay(
    settings: Settings,
    records: Iterable[bytes],
    *,
    rate: float | None,
    total: int | None = None,
    progress: Callable[[int], None] | None = None,
    topic: str | None = None,
) -> ReplayReport:
    """Produce ``records`` keyed by customer; returns once Kafka acknowledged all."""
    report = ReplayReport()
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka,
            "enable.idempotence": "true",
            "acks": "all",
            "linger.ms": "5",
            "compression.type": "lz4",
            "queue.buffering.max.messages": "200000",
        }
    )

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            report.sent += 1
        elif len(report.failures) < 10:
            report.failures.append(str(err))

    target = topic or settings.events_topic
    started = time.monotonic()
    for raw in records:
        key = key_of(raw)
        report.unkeyed += key is None
        while True:
            try:
                producer.produce(target, key=key, value=raw, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain
        report.read += 1
        if rate:
            pause = started + report.read / rate - time.monotonic()
            if pause > 0:
                producer.poll(pause)
        if report.read % 1000 == 0:
            producer.poll(0)
            if progress:
                progress(report.read)
    try:
        remaining = producer.flush(60)
    except KafkaException as exc:
        raise ReplayError(f"Kafka: {exc}") from exc
    if progress:
        progress(report.read)
    report.seconds = time.monotonic() - started
    if remaining:
        report.failures.append(f"{remaining} records not acknowledged within 60 s")
    return report
