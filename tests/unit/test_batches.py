"""Routing a batch read from Kafka (dataflows/batches.py): where each record goes."""

from __future__ import annotations

import pickle
from typing import Any

import confluent_kafka
import orjson
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage

from dataflows.batches import route
from dataflows.customer_step import Stamped
from dataflows.stream_clock import PartitionTime
from engine.events import BaseEvent
from engine.identity import Link, ToCustomer

TS = "2026-01-05T10:00:00Z"


def record(offset: int, value: bytes | None) -> KafkaSourceMessage[bytes | None, bytes | None]:
    return KafkaSourceMessage(None, value, topic="t", offset=offset, partition=0)


def event(**fields: object) -> bytes:
    return orjson.dumps({"type": "page_view", "timestamp": TS, "url": "https://x/", **fields})


def test_every_record_lands_somewhere_and_the_position_moves_past_all() -> None:
    error = KafkaError(
        confluent_kafka.KafkaError(confluent_kafka.KafkaError._MSG_TIMED_OUT),
        record(4, b"lost"),
    )
    batch: list[Any] = [
        record(0, event(event_id="e0", customer_id="c1")),
        record(1, event(event_id="e1", anonymous_id="a1")),
        record(2, event(event_id="e2", customer_id="c2", anonymous_id="a2")),
        record(3, b"{not json"),
        error,
    ]
    out = route(PartitionTime(0.0), batch)
    assert out.read == 5
    assert [k for k, _ in out.customers] == ["c1", "c2"]
    assert [k for k, _ in out.anonymous] == ["a1", "a2"]
    assert isinstance(out.anonymous[1][1].item, Link)
    # Bad input is never dropped: a dead letter with its reason and its bytes.
    reasons = [d.item.reason for d in out.dead]  # type: ignore[union-attr]
    assert reasons[0].startswith("undecodable") and reasons[1].startswith("kafka error")
    assert [d.item.raw for d in out.dead] == [b"{not json", b"lost"]  # type: ignore[union-attr]
    assert [d.offset for d in out.dead] == [3, 4]
    assert out.positions == {"t:0": 5}


def test_an_event_crosses_to_another_process_as_its_bytes_and_decodes_the_same() -> None:
    raw = event(event_id="e0", customer_id="c1", context={"timezone": "Europe/Paris"})
    out = route(PartitionTime(0.0), [record(0, raw)])
    stamped = out.customers[0][1]
    again: Stamped[ToCustomer] = pickle.loads(pickle.dumps(stamped))
    assert again.item == stamped.item and again.raw == raw
    assert (again.source, again.watermark) == (stamped.source, stamped.watermark)
    assert isinstance(again.item.event, BaseEvent)
    # Items without their bytes (merges, links) pickle as themselves.
    link = Stamped(Link("a", "c1", 1.0), "t:0", 5.0)
    assert pickle.loads(pickle.dumps(link)).item == Link("a", "c1", 1.0)
