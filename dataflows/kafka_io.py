"""Kafka connectors for the personalization flow: source, sinks, dead letters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.connectors.kafka import (
    KafkaError,
    KafkaSink,
    KafkaSinkMessage,
    KafkaSource,
    KafkaSourceMessage,
)
from bytewax.dataflow import Stream
from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

from dataflows.caught_up import CaughtUpReports
from dataflows.kafka_sink import PulseKafkaSink
from dataflows.kafka_source import PulseKafkaPartition, PulseKafkaSource
from dataflows.stream_clock import PartitionTime, Wakeups
from engine.control import ControlMessage, CustomerMerged, decode_control, encode_control
from engine.customer import Forwarded
from engine.decode import DeadLetter, encode_event
from engine.events import BaseEvent
from engine.triggers import Decision, Trigger
from pulse.settings import Settings

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder()

RawMessage = KafkaSourceMessage[bytes | None, bytes | None]
SinkRecord = KafkaSinkMessage[bytes, bytes]

# The longest an idle single-worker flow blocks in its source (kafka_source.py).
IDLE_WAIT_S = 0.1
# The most events a source hands the flow at once. Live, batches are whatever
# arrived since the last poll, far fewer; catching up, larger batches spread
# the flow's per-batch costs thinner (2,000 against 500: 1.25x the events/s,
# measured with benchmarks/profiles.py's events on this kind of machine).
EVENTS_BATCH = 2000

_PRODUCER_CONFIG = {
    # Idempotent, fully acknowledged writes: a retried send is never duplicated
    # and an acknowledged one is never lost.
    "enable.idempotence": "true",
    "acks": "all",
    "linger.ms": "1",
    "compression.type": "lz4",
}


def _source(
    settings: Settings, topic: str, starting_offset: int, batch_size: int, layout: FlowLayout
) -> Source[Any]:
    if settings.kafka_connectors == "own":
        return PulseKafkaSource(
            settings.kafka,
            [topic],
            starting_offset=starting_offset,
            batch_size=batch_size,
            # A worker may block in its source while idle only when it is the
            # flow's only one (dataflows/kafka_source.py).
            idle_wait_s=IDLE_WAIT_S if layout.workers == 1 else 0.0,
            wakeups=layout.wakeups,
        )
    return KafkaSource(
        [settings.kafka],
        [topic],
        starting_offset=starting_offset,
        # Consumer errors (broker restarts) are logged, not raised: librdkafka
        # reconnects on its own and the flow must not die with the broker.
        raise_on_errors=False,
        batch_size=batch_size,
        add_config={"fetch.wait.max.ms": "5", "statistics.interval.ms": "0"},
    )


class FlowLayout:
    """What the connectors need to know about the flow they are part of: its
    number of workers over all processes, and its stateful steps' wake-ups."""

    __slots__ = ("wakeups", "workers")

    def __init__(self, workers: int = 1, wakeups: Wakeups | None = None) -> None:
        self.workers = workers
        self.wakeups = wakeups


def events_source(
    settings: Settings,
    reports: CaughtUpReports,
    partition_time: PartitionTime,
    layout: FlowLayout,
) -> Source[Any]:
    """The events topic, whose partitions seal their position at the end of each
    epoch and say whether they were read to the end then (for the stream clock,
    dataflows/stream_clock.py)."""
    start = OFFSET_BEGINNING if settings.start_from == "earliest" else OFFSET_END
    return _ReportingSource(
        reports,
        partition_time,
        _source(settings, settings.events_topic, start, EVENTS_BATCH, layout),
    )


class _ReportingSource(FixedPartitionedSource[Any, int | None]):
    """A source (own or stock) whose partitions seal epochs and report being
    read to the end."""

    def __init__(self, reports: CaughtUpReports, partition_time: PartitionTime, inner: Any) -> None:
        self._inner = inner
        self._reports = reports
        self._partition_time = partition_time

    def list_parts(self) -> list[str]:
        parts: list[str] = self._inner.list_parts()
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        return _ReportingPartition(
            self._inner.build_part(step_id, for_part, resume_state),
            self._reports,
            self._partition_time,
        )


class _ReportingPartition(StatefulSourcePartition[Any, int | None]):
    """Wraps a source partition: Pulse's own (dataflows/kafka_source.py) or a
    stock one (bytewax 0.21, pinned in pyproject.toml; its consumer and
    position are read from its private attributes).

    Bytewax calls ``snapshot`` exactly at the end of each of the partition's
    epochs, and ``next_batch`` of a new epoch only once the whole dataflow has
    finished the previous ones. So the position and lag taken at a snapshot
    speak for records that are applied everywhere by the next ``next_batch``:
    that is when the lag is reported.
    """

    def __init__(self, inner: Any, reports: CaughtUpReports, partition_time: PartitionTime) -> None:
        self._inner = inner
        self._reports = reports
        self._partition_time = partition_time
        self._own = isinstance(inner, PulseKafkaPartition)
        if self._own:
            topic, index = inner.topic, inner.partition
        else:
            topic, index = inner._topic, inner._part_idx
        self._source = f"{topic}:{index}"
        self._partition = TopicPartition(topic, index)
        self._sealed_lag: int | None = None  # not known until the first epoch ends

    def next_batch(self) -> list[Any]:
        batch: list[Any] = self._inner.next_batch()
        self._reports.report(self._source, self._sealed_lag)
        return batch

    def next_awake(self) -> Any:
        return self._inner.next_awake()

    def snapshot(self) -> int | None:
        offset: int | None = self._inner.snapshot()
        self._sealed_lag = self._lag()
        self._partition_time.seal(self._source, self._position())
        return offset

    def close(self) -> None:
        self._inner.close()

    def _position(self) -> int:
        """The offset read next (negative before anything was fetched)."""
        if self._own:
            return int(self._inner.position())
        position = int(self._inner._offset)
        if position < 0:  # a symbolic start (beginning, end): ask where the consumer is
            position = int(self._inner._consumer.position([self._partition])[0].offset)
        return position

    def _lag(self) -> int | None:
        """Records left to read: the end of the partition librdkafka last fetched
        less the position; None before anything was fetched."""
        if self._own:
            high = self._inner.high_watermark()
        else:
            _low, high = self._inner._consumer.get_watermark_offsets(self._partition, cached=True)
        position = self._position()
        if high < 0 or position < 0:
            return None
        return max(0, int(high) - position)


def control_source(settings: Settings, layout: FlowLayout) -> Source[Any]:
    """The control topic (erasures), always read from its start on a fresh flow."""
    return _source(settings, settings.control_topic, OFFSET_BEGINNING, 100, layout)


def decode_control_record(msg: RawMessage | KafkaError[bytes | None, bytes | None]) -> Decoded:
    return _decoded(msg, _parse_control)


def _parse_control(raw: bytes | None) -> ControlMessage | DeadLetter:
    raw = raw or b""
    try:
        return decode_control(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DeadLetter(f"invalid control message: {exc}", raw)


def kafka_output(
    settings: Settings, layout: FlowLayout, step_id: str, records: Stream[SinkRecord]
) -> None:
    """Records to Kafka through the configured sink (``kafka_connectors``)."""
    if settings.kafka_connectors == "own":
        # No linger: records leave at once, and while a request is in flight
        # the next ones batch up by themselves (the flow does not wait on
        # them, kafka_sink.py).
        config = {"bootstrap.servers": settings.kafka, **_PRODUCER_CONFIG, "linger.ms": "0"}
        keyed = op.flat_map_batch(f"{step_id}_route", records, _route)
        op.output(step_id, keyed, PulseKafkaSink(config, layout.workers))
    else:
        stock = KafkaSink([settings.kafka], topic=None, add_config=dict(_PRODUCER_CONFIG))
        op.output(step_id, records, stock)


def _route(records: list[SinkRecord]) -> list[tuple[str, SinkRecord]]:
    """Records of one customer (the Kafka key) leave through one sink partition."""
    return [((r.key.decode() if r.key else ""), r) for r in records]


class Decoded:
    """An event decoded from a source record, or the dead letter it became."""

    __slots__ = ("item", "offset", "partition", "topic")

    def __init__(
        self,
        item: BaseEvent | ControlMessage | DeadLetter,
        topic: str | None,
        partition: int | None,
        offset: int | None,
    ) -> None:
        self.item = item
        self.topic = topic
        self.partition = partition
        self.offset = offset


def _decoded(
    msg: RawMessage | KafkaError[bytes | None, bytes | None],
    parse: Callable[[bytes | None], BaseEvent | ControlMessage | DeadLetter],
) -> Decoded:
    """A source record parsed, or its Kafka error as a dead letter, with its position."""
    if isinstance(msg, KafkaError):
        return kafka_error_letter(msg)
    return Decoded(parse(msg.value), msg.topic, msg.partition, msg.offset)


def kafka_error_letter(error: KafkaError[bytes | None, bytes | None]) -> Decoded:
    """A record the source could only report as an error, as a dead letter."""
    src = error.msg
    letter = DeadLetter(f"kafka error: {error.err}", src.value or b"")
    return Decoded(letter, src.topic, src.partition, src.offset)


def dead_letter_message(settings: Settings, decoded: Decoded) -> KafkaSinkMessage[bytes, bytes]:
    """A DLQ record: the original bytes as the value, the facts in headers and key."""
    assert isinstance(decoded.item, DeadLetter)
    letter = decoded.item
    log.warning(
        "dead letter from %s[%s]@%s: %s",
        decoded.topic,
        decoded.partition,
        decoded.offset,
        letter.reason,
    )
    headers: list[tuple[str, bytes]] = [
        ("pulse.reason", letter.reason.encode()[:4000]),
        ("pulse.source.topic", str(decoded.topic).encode()),
        ("pulse.source.partition", str(decoded.partition).encode()),
        ("pulse.source.offset", str(decoded.offset).encode()),
    ]
    key = f"{decoded.topic}:{decoded.partition}:{decoded.offset}".encode()
    return KafkaSinkMessage(key, letter.raw, topic=settings.events_dlq_topic, headers=headers)


def trigger_message(settings: Settings, trigger: Trigger) -> KafkaSinkMessage[bytes, bytes]:
    return KafkaSinkMessage(
        trigger.customer_id.encode(),
        _json.encode(trigger),
        topic=settings.triggers_topic,
        headers=[("pulse.trigger_id", trigger.trigger_id.encode())],
    )


def decision_message(settings: Settings, decision: Decision) -> KafkaSinkMessage[bytes, bytes]:
    return KafkaSinkMessage(
        decision.customer_id.encode(),
        _json.encode(decision),
        topic=settings.decisions_topic,
        headers=[("pulse.rule_id", decision.rule_id.encode())],
    )


def rerouted_message(
    settings: Settings, effect: Forwarded | CustomerMerged
) -> KafkaSinkMessage[bytes, bytes]:
    """What an alias of two known customers sends back (engine/identity.py): an
    event of the aliased id to the events topic, addressed to the customer it
    went into; a handed-over profile to the control topic, keyed by its new
    customer. Both keep their ids, so a replay that sends them again counts once."""
    if isinstance(effect, Forwarded):
        event = msgspec.structs.replace(effect.event, customer_id=effect.customer_id)
        return KafkaSinkMessage(
            effect.customer_id.encode(), encode_event(event), topic=settings.events_topic
        )
    return KafkaSinkMessage(
        effect.customer_id.encode(), encode_control(effect), topic=settings.control_topic
    )
