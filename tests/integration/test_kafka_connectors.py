"""Pulse's own Kafka connectors (dataflows/kafka_source.py, kafka_sink.py) on the real broker.

The recovery guarantees rest on two promises tested here: a source partition's
snapshot is the offset after the last message it *returned*, whatever its
worker's shared consumer fetched ahead; and a sink snapshot returns only once
Kafka has acknowledged everything handed to it, and fails when Kafka refused
a record.
"""

from __future__ import annotations

import time

import pytest
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from confluent_kafka import OFFSET_BEGINNING

from dataflows.kafka_sink import DeliveryFailed, PulseKafkaSink
from dataflows.kafka_source import HUBS, PulseKafkaPartition, PulseKafkaSource, SourceItem
from dataflows.stream_clock import Wakeups
from pulse.settings import Settings
from tests.helpers import consume, produce


def _read(part: PulseKafkaPartition, want: int, timeout_s: float = 20.0) -> list[int]:
    offsets: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(offsets) < want and time.monotonic() < deadline:
        for item in part.next_batch():
            assert isinstance(item, KafkaSourceMessage) and item.offset is not None
            offsets.append(item.offset)
        time.sleep(0.001)
    return offsets


def test_one_consumer_per_worker_over_every_partition(pulse_settings: Settings) -> None:
    s = pulse_settings
    for p in range(2):
        produce(s, s.events_topic, [(f"k{p}".encode(), b"e%d" % i) for i in range(30)])
    produce(s, s.control_topic, [(None, b"c%d" % i) for i in range(5)])
    events = PulseKafkaSource(s.kafka, [s.events_topic], starting_offset=OFFSET_BEGINNING)
    control = PulseKafkaSource(s.kafka, [s.control_topic], starting_offset=OFFSET_BEGINNING)
    parts = {
        name: source.build_part("step", name, None)
        for source, names in ((events, events.list_parts()), (control, control.list_parts()))
        for name in names
    }
    try:
        assert len({id(part._hub) for part in parts.values()}) == 1  # one consumer
        # Every partition is read in turn until all 65 records came (a partition
        # may hold none: the control records have no key), then 3 s more, so a
        # record read twice would show.
        read = dict.fromkeys(parts, 0)
        deadline = time.monotonic() + 20
        settle: float | None = None
        while time.monotonic() < (settle or deadline):
            for name, part in parts.items():
                for item in part.next_batch():
                    assert isinstance(item, KafkaSourceMessage) and item.offset is not None
                    read[name] += 1
            if settle is None and sum(read.values()) >= 65:
                settle = time.monotonic() + 3
            time.sleep(0.001)
        assert sum(n for name, n in read.items() if s.events_topic in name) == 60
        assert sum(n for name, n in read.items() if s.control_topic in name) == 5
    finally:
        for part in parts.values():
            part.close()
    assert not HUBS._by_thread  # the last partition closed the consumer


def test_snapshot_counts_only_what_was_returned(pulse_settings: Settings) -> None:
    s = pulse_settings
    produce(s, s.events_topic, [(b"same-key", b"e%d" % i) for i in range(50)])
    source = PulseKafkaSource(
        s.kafka, [s.events_topic], starting_offset=OFFSET_BEGINNING, batch_size=10
    )
    parts = [source.build_part("step", name, None) for name in source.list_parts()]
    try:
        first: list[SourceItem] = []
        deadline = time.monotonic() + 20
        while not first and time.monotonic() < deadline:
            for loaded in parts:
                if first := loaded.next_batch():
                    break
        got = len(first)
        assert 0 < got <= 10
        # The consumer fetched all 50 by now (or soon), but only what was
        # returned counts.
        time.sleep(0.5)
        loaded._hub.poll(0.1)
        assert loaded._hub.buffered > 0
        assert loaded.snapshot() == got
        assert loaded.position() == got
    finally:
        for part in parts:
            part.close()

    # Resumed from that snapshot, the partition goes on exactly where it stopped.
    name = f"{loaded.partition}-{s.events_topic}"
    resumed = source.build_part("step", name, got)
    try:
        offsets = _read(resumed, 50 - got)
        assert offsets == list(range(got, 50))  # in order, none skipped or repeated
        assert resumed.snapshot() == 50
    finally:
        resumed.close()


def test_idle_wait_stops_at_the_next_wakeup(pulse_settings: Settings) -> None:
    """An idle partition blocks for idle_wait_s, but never past a step's wake-up."""
    s = pulse_settings
    wakeups = Wakeups()
    source = PulseKafkaSource(
        s.kafka,
        [s.events_topic],
        starting_offset=OFFSET_BEGINNING,
        hot_s=0.0,
        idle_wait_s=1.0,
        wakeups=wakeups,
    )
    parts = [source.build_part("step", name, None) for name in source.list_parts()]
    try:
        leader = next(p for p in parts if p._hub.leader == p._key)
        t0 = time.monotonic()
        assert leader.next_batch() == []
        assert time.monotonic() - t0 >= 0.9  # idle: blocked in librdkafka

        wakeups.add(time.time() + 0.1, time.time())
        t0 = time.monotonic()
        leader.next_batch()
        assert time.monotonic() - t0 < 0.5  # cut short by the wake-up

        # The first event after the pause ends the wait as soon as it arrives.
        follower = next(p for p in parts if p is not leader)
        assert follower.next_batch() == []  # followers never block
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": s.kafka})
        producer.produce(s.events_topic, b"wake", b"x")
        producer.flush(10)
        sent = time.monotonic()
        got = leader.next_batch() + follower.next_batch()
        assert len(got) == 1
        assert time.monotonic() - sent < 0.5
    finally:
        for part in parts:
            part.close()


def _record(topic: str, n: int) -> KafkaSinkMessage[bytes, bytes]:
    return KafkaSinkMessage(b"k%d" % n, b"v%d" % n, topic=topic)


def test_sink_acknowledged_at_snapshot(pulse_settings: Settings) -> None:
    s = pulse_settings
    sink = PulseKafkaSink({"bootstrap.servers": s.kafka, "linger.ms": "50"}, partitions=1)
    part = sink.build_part("out", "0", None)
    try:
        part.write_batch([_record(s.triggers_topic, n) for n in range(100)])
        assert part.snapshot() == 100  # returns once Kafka acknowledged all of them
        assert len(consume(s, s.triggers_topic, 100, timeout_s=20)) == 100
    finally:
        part.close()


def test_sink_snapshot_fails_when_kafka_refuses(pulse_settings: Settings) -> None:
    """A refused record fails the snapshot, so the epoch is never committed
    and the flow resumes from the previous one instead of losing it."""
    s = pulse_settings
    config = {
        "bootstrap.servers": s.kafka,
        "message.timeout.ms": "1500",
        "message.max.bytes": "2000",
    }
    part = PulseKafkaSink(config, partitions=1).build_part("out", "0", None)
    try:
        part.write_batch([KafkaSinkMessage(b"k", b"x" * 1500, topic=f"{s.topic_prefix}.absent")])
        with pytest.raises(DeliveryFailed, match=r"refused|not acknowledged"):
            part.snapshot()
    finally:
        part._shared.failures.clear()
        part.close()
