"""Pulse's own Kafka source: one consumer per worker over all of its partitions.

Bytewax's stock ``KafkaSource`` gives every partition its own consumer and
waits up to a millisecond on each in turn, so a worker that owns five
partitions (four of events, one of control) spends five milliseconds per loop
just asking, and five librdkafka consumers keep fetching from the broker while
nothing happens: the p99 of a do-nothing flow was 12 ms at 1,000 events/s, and
an idle ``pulse run`` used about 15 % of a core (DESIGN.md).

Here every partition a worker owns, of every topic the flow reads, is assigned
to one consumer (a ``_Hub`` per worker thread). Whichever partition is asked
for a batch polls the consumer and the messages go to their partitions' queues.
The recovery contract is the stock one, so snapshots of either are
interchangeable: a partition's state is the offset after the last message it
*returned* (never one merely buffered), and its key is ``<index>-<topic>``.

Waiting. While events flow (the last one less than ``hot_s`` ago) polls do
not wait and Bytewax asks again within a millisecond. Once the stream has been
quiet for ``hot_s`` nothing downstream can still be busy, and when this worker
is the only one of the flow, the first partition blocks in librdkafka
(releasing the GIL) until a message arrives, for at most ``idle_wait_s`` and
never past the next wake-up a pending rule action asked for (``Wakeups``): an
idle process sleeps instead of spinning, and the first event after a pause is
seen as soon as the broker hands it over. With several workers a blocked
worker would hold up items other workers route to it, so it never blocks: a
quiet one polls every ``IDLE_POLL_S`` instead, parked in Bytewax meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient

from dataflows.stream_clock import Wakeups

log = logging.getLogger(__name__)

# How often a quiet worker of a multi-worker flow polls Kafka.
IDLE_POLL_S = 0.01
IDLE_POLL = timedelta(seconds=IDLE_POLL_S)

SourceItem = KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]

_CONSUMER_CONFIG = {
    # Positions live in Bytewax's snapshots, not in a consumer group.
    "group.id": "pulse-dataflow-unused",
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    # A fetch the broker holds open returns as soon as one byte arrives
    # (fetch.min.bytes), so a long wait costs no latency, only fewer idle
    # round trips.
    "fetch.wait.max.ms": "100",
    "fetch.min.bytes": "1",
    "statistics.interval.ms": "0",
}


class _Hub:
    """One worker's consumer and the messages it fetched, queued per partition."""

    def __init__(self, config: dict[str, str], batch_size: int) -> None:
        self.consumer = Consumer(config)
        self.batch_size = batch_size
        self.queues: dict[tuple[str, int], deque[Message]] = {}
        self.buffered = 0
        self.leader: tuple[str, int] | None = None
        self.last_data_at = 0.0  # monotonic
        self._last_error_log = 0.0

    def add(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self.queues[key] = deque()
        if self.leader is None:
            self.leader = key
        self.consumer.incremental_assign([TopicPartition(topic, partition, offset)])

    def remove(self, topic: str, partition: int) -> bool:
        """Forget a partition; True when the hub has none left."""
        key = (topic, partition)
        queue = self.queues.pop(key, None)
        if queue is not None:
            self.buffered -= len(queue)
        self.consumer.incremental_unassign([TopicPartition(topic, partition)])
        if self.leader == key:
            self.leader = next(iter(self.queues), None)
        return not self.queues

    def poll(self, timeout_s: float) -> None:
        if self.buffered >= 10 * self.batch_size:
            return  # partitions not asked for a while (backpressure): no more
        if timeout_s > 0:
            # consume() would wait for a whole batch or the timeout; poll()
            # returns with the first message, then the rest is taken at once.
            first = self.consumer.poll(timeout_s)
            if first is None:
                return
            messages = [first, *self.consumer.consume(self.batch_size - 1, 0)]
        else:
            messages = self.consumer.consume(self.batch_size, 0)
            if not messages:
                return
        for message in messages:
            queue = self.queues.get((message.topic(), message.partition()))  # type: ignore[arg-type]
            if queue is None:
                self._log_error(message)
                continue
            queue.append(message)
            self.buffered += 1
        self.last_data_at = time.monotonic()

    def take(self, key: tuple[str, int], limit: int | None = None) -> list[Message]:
        queue = self.queues[key]
        n = min(len(queue), self.batch_size if limit is None else limit)
        self.buffered -= n
        return [queue.popleft() for _ in range(n)]

    def _log_error(self, message: Message) -> None:
        """An error not about an assigned partition (the broker went away, say):
        librdkafka retries on its own, so it is worth a line, not a dead letter."""
        error = message.error()
        now = time.monotonic()
        if error is not None and now - self._last_error_log > 10.0:
            self._last_error_log = now
            log.warning("Kafka consumer: %s (librdkafka keeps retrying)", error)

    def close(self) -> None:
        self.consumer.close()


class _Hubs:
    """The hub of each worker thread of this process (Bytewax builds and polls
    a worker's partitions, of every input step, on that worker's thread)."""

    def __init__(self) -> None:
        self._by_thread: dict[int, _Hub] = {}
        self._lock = threading.Lock()

    def get(self, config: dict[str, str], batch_size: int) -> _Hub:
        """The worker's hub, made by the first source that asks (the flow's
        events source: its batch size holds for the control topic too)."""
        ident = threading.get_ident()
        with self._lock:
            hub = self._by_thread.get(ident)
            if hub is None:
                hub = self._by_thread[ident] = _Hub(config, batch_size)
            return hub

    def drop(self, hub: _Hub) -> None:
        with self._lock:
            for ident, known in list(self._by_thread.items()):
                if known is hub:
                    del self._by_thread[ident]
        hub.close()


HUBS = _Hubs()


class PulseKafkaPartition(StatefulSourcePartition[SourceItem, int | None]):
    """One Kafka partition, read through its worker's shared consumer."""

    def __init__(
        self,
        hub: _Hub,
        topic: str,
        partition: int,
        start: int,
        *,
        hot_s: float,
        idle_wait_s: float,
        wakeups: Wakeups | None,
    ) -> None:
        self._hub = hub
        self._key = (topic, partition)
        self.topic = topic
        self.partition = partition
        self._start = start
        self._tp = TopicPartition(topic, partition)
        self._end_at_poll = -1
        self._next_offset = start  # symbolic (negative) until known, see position()
        self._hot_s = hot_s
        self._idle_wait_s = idle_wait_s
        self._wakeups = wakeups
        hub.add(topic, partition, start)

    def next_batch(self) -> list[SourceItem]:
        hub = self._hub
        # Poll even when this partition has messages queued: what the consumer
        # fetched is then taken in at every call, so a partition sealed right
        # after (kafka_io.py) is read to what librdkafka knows of its end.
        hub.poll(0.0 if hub.queues[self._key] else self._wait_s())
        messages = hub.take(self._key)
        if messages:
            self._next_offset = messages[-1].offset() + 1  # type: ignore[operator]
        end = self._end()
        room = hub.batch_size - len(messages)
        if end > self._next_offset >= 0 and not hub.queues[self._key] and room > 0:
            # librdkafka raises a partition's known end before it queues the
            # records of the same fetch: one more look takes those in, rather
            # than report the partition behind at a seal for a few
            # microseconds' difference (and hold delayed rules back an epoch).
            hub.poll(0.0)
            more = hub.take(self._key, room)
            if more:
                messages.extend(more)
                self._next_offset = more[-1].offset() + 1  # type: ignore[operator]
                end = self._end()
        self._end_at_poll = end
        return [_item(m) for m in messages]

    def _end(self) -> int:
        return int(self._hub.consumer.get_watermark_offsets(self._tp, cached=True)[1])

    def _wait_s(self) -> float:
        """How long this call may block the worker (module docstring)."""
        hub = self._hub
        if self._idle_wait_s <= 0 or hub.leader != self._key or hub.buffered:
            return 0.0
        now = time.monotonic()
        if now - hub.last_data_at < self._hot_s:
            return 0.0
        wait = self._idle_wait_s
        if self._wakeups is not None:
            wall = time.time()
            due = self._wakeups.next_after(wall)
            if due is not None:
                wait = min(wait, max(0.0, due - wall))
        return wait

    def next_awake(self) -> datetime | None:
        """Ask again at once (Bytewax waits a millisecond after an empty batch),
        except in a flow of several workers gone quiet: those may not block
        (see the module docstring), so they look every ``IDLE_POLL_S``. A
        worker parked that way still wakes for items other workers route to
        it and for its steps' timers; only its next poll of Kafka waits."""
        hub = self._hub
        if (
            self._idle_wait_s > 0
            or hub.buffered
            or time.monotonic() - hub.last_data_at < self._hot_s
        ):
            return None
        return datetime.now(UTC) + IDLE_POLL

    def snapshot(self) -> int | None:
        self.position()  # a concrete offset once one is known
        return self._next_offset

    def position(self) -> int:
        """The offset read next; negative while not known yet.

        Before anything was returned, a partition that started at its
        beginning (or end) stands at the log's start (or end) as its last
        fetch reported it: a partition nobody writes to then counts as read
        to its end, which the stream clock waits for. (Resolving the start
        at build time would cost a broker round trip per partition there,
        and skew the epochs of the flow's input steps by as much.)
        """
        if self._next_offset >= 0:
            return self._next_offset
        if self._hub.queues[self._key]:
            return -1  # fetched, not returned yet: the first offset is not ours to claim
        low, high = self._hub.consumer.get_watermark_offsets(self._tp, cached=True)
        known = low if self._start == OFFSET_BEGINNING else high
        if known >= 0 and self._start in (OFFSET_BEGINNING, OFFSET_END):
            self._next_offset = int(known)
        return self._next_offset

    def high_watermark(self) -> int:
        """The end of the partition as librdkafka knew it when this partition
        last polled (-1 before any fetch).

        The lag at a seal (kafka_io.py) is measured against this rather than
        against a fetch answered after the poll: at a thousand events a
        second one arrives every millisecond or so, and a partition that
        returned everything it had would be reported behind at most seals,
        holding the stream clock (and delayed rules) back by an epoch.
        """
        return self._end_at_poll

    def close(self) -> None:
        if self._hub.remove(*self._key):
            HUBS.drop(self._hub)


class PulseKafkaSource(FixedPartitionedSource[SourceItem, int | None]):
    """Topics read through one consumer per worker; see the module docstring."""

    def __init__(
        self,
        brokers: str,
        topics: Iterable[str],
        *,
        starting_offset: int,
        batch_size: int = 500,
        hot_s: float = 0.5,
        idle_wait_s: float = 0.0,
        wakeups: Wakeups | None = None,
    ) -> None:
        self._brokers = brokers
        self._topics = list(topics)
        self._starting_offset = starting_offset
        self._batch_size = batch_size
        self._hot_s = hot_s
        self._idle_wait_s = idle_wait_s
        self._wakeups = wakeups
        self._config = {"bootstrap.servers": brokers, **_CONSUMER_CONFIG}

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self._brokers})
        metadata = admin.list_topics(timeout=10)
        parts: list[str] = []
        for topic in self._topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                problem = found.error if found is not None else "does not exist"
                raise RuntimeError(f"Kafka topic {topic!r} is not available: {problem}")
            parts.extend(f"{index}-{topic}" for index in found.partitions)
        return parts

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> PulseKafkaPartition:
        index, topic = for_part.split("-", 1)
        if topic not in self._topics:
            raise RuntimeError(f"recovery state names topic {topic!r}, not one of {self._topics}")
        start = self._starting_offset if resume_state is None else resume_state
        return PulseKafkaPartition(
            HUBS.get(self._config, self._batch_size),
            topic,
            int(index),
            start,
            hot_s=self._hot_s,
            idle_wait_s=self._idle_wait_s,
            wakeups=self._wakeups,
        )


def _item(message: Message) -> SourceItem:
    item: KafkaSourceMessage[bytes | None, bytes | None] = KafkaSourceMessage(
        key=message.key(),  # type: ignore[arg-type]
        value=message.value(),  # type: ignore[arg-type]
        topic=message.topic(),
        headers=message.headers() or [],  # type: ignore[arg-type]
        latency=message.latency(),
        offset=message.offset(),
        partition=message.partition(),
        timestamp=message.timestamp(),
    )
    error = message.error()
    if error is not None and error.code() != ConfluentKafkaError._PARTITION_EOF:
        return KafkaError(error, item)
    return item
