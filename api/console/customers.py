"""Customer 360: what the API serves about one customer, and its recent history.

Profile, recommendations, inbox, export and erasure are the API's own routes,
called in-process (``InProcess``) so the console shows exactly what a client
of the API gets and never re-implements a route. Next-best-action and scores
are shown when this API has a route for them (issue 11 adds them), and said
to be not available otherwise.

The timeline and the rule decisions come from Kafka: the newest records of
the events and decisions topics, both keyed by customer id. No per-customer
index exists for them, so the console reads the tail of each partition
(``TAIL`` records) and keeps this customer's: recent activity of a busy
customer is there; older history is summarised by the profile.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson
from confluent_kafka import TopicPartition
from fastapi import FastAPI

from api.console.kafka_clients import LazyConsumer
from pulse.settings import Settings

TAIL = 1000  # newest records read per partition for a timeline
NEXT_ACTION = "/v1/customers/{customer_id}/next-action"


class InProcess:
    """GETs and DELETEs against this very app, with a key it holds.

    The console's viewer is already checked by its session; the API's routes
    still want a key, so the console presents one of the configured ones."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        key = (settings.read_keys or settings.admin_keys or ("",))[0]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://console", headers=headers
        )
        self._paths = {getattr(r, "path", "") for r in app.routes}

    def has(self, path: str) -> bool:
        return path in self._paths

    async def get(self, path: str) -> tuple[int, Any]:
        response = await self._client.get(path)
        return response.status_code, _json(response)

    async def delete(self, path: str) -> tuple[int, Any]:
        response = await self._client.delete(path)
        return response.status_code, _json(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@dataclass
class Happening:
    """One line of the timeline: an event or a rule decision."""

    at: float
    kind: str  # "event" or "decision"
    title: str
    detail: str = ""


@dataclass
class Timeline:
    items: list[Happening] = field(default_factory=list)
    scanned: int = 0  # records read
    error: str = ""


class TopicTail:
    """Reads the newest records of the events and decisions topics for one key."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._kafka = LazyConsumer(
            {
                "bootstrap.servers": settings.kafka,
                "group.id": f"pulse-console-tail-{uuid.uuid4().hex}",
                "enable.auto.commit": "false",
                "fetch.wait.max.ms": 10,
            }
        )

    def timeline(self, customer_id: str, aliases: list[str]) -> Timeline:
        keys = {customer_id.encode(), *(f"anon:{a}".encode() for a in aliases)}
        parsers = {self._settings.events_topic: _event, self._settings.decisions_topic: _decision}
        found = Timeline()
        with self._kafka.lock:
            try:
                matches, found.scanned = self._tail(list(parsers), keys)
                found.items = [parsers[topic](value) for topic, value in matches]
            except Exception as exc:  # Kafka down: the rest of the page still shows
                found.error = str(exc)
        found.items.sort(key=lambda h: -h.at)
        return found

    def close(self, wait_s: float = 0.5) -> None:
        self._kafka.close(wait_s)

    def _tail(
        self, topics: list[str], keys: set[bytes], timeout_s: float = 1.0
    ) -> tuple[list[tuple[str, bytes]], int]:
        """This customer's records among the newest ``TAIL`` of each partition of
        the topics, read together: one assignment, so the fetches overlap."""
        consumer = self._kafka.get()
        starts, remaining = [], {}
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=2).topics.get(topic)
            if metadata is None or metadata.error is not None:
                continue
            for p in metadata.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2)
                if high > low:
                    start = max(low, high - TAIL)
                    starts.append(TopicPartition(topic, p, start))
                    remaining[(topic, p)] = high - start
        if not starts:
            return [], 0
        out: list[tuple[str, bytes]] = []
        scanned = 0
        consumer.assign(starts)
        try:
            deadline = time.monotonic() + timeout_s
            while any(n > 0 for n in remaining.values()) and time.monotonic() < deadline:
                for msg in consumer.consume(1000, 0.05):
                    name, partition = msg.topic(), msg.partition()
                    if msg.error() is not None or name is None or partition is None:
                        continue
                    remaining[(name, partition)] -= 1
                    scanned += 1
                    value = msg.value()
                    if msg.key() in keys and value is not None:
                        out.append((name, value))
        finally:
            consumer.unassign()
        return out, scanned


def _event(raw: bytes) -> Happening:
    data = orjson.loads(raw)
    kind = str(data.get("type", "?"))
    detail = ", ".join(
        f"{k} {data[k]}"
        for k in ("sku", "order_id", "total", "query", "category", "message_channel", "rule_id")
        if data.get(k) not in (None, "")
    )
    return Happening(_time(data.get("timestamp")), "event", kind, detail)


def _decision(raw: bytes) -> Happening:
    data = orjson.loads(raw)
    outcome = str(data.get("outcome", "?"))
    reason = str(data.get("reason", ""))
    title = f"{data.get('rule_id', '?')}: {outcome}"
    detail = ", ".join(
        part
        for part in (
            f"reason {reason}" if reason else "",
            f"channel {data['channel']}" if data.get("channel") else "",
        )
        if part
    )
    return Happening(float(data.get("at", 0.0)), "decision", title, detail)


def _time(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0
