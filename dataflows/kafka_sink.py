"""Pulse's own Kafka sink: records go out at once, acknowledgements are awaited per epoch.

Bytewax's stock ``KafkaSink`` flushes after every batch: the worker waits a
full acknowledged round trip (``acks=all``) each time it writes, which at a
few thousand events a second is most of the flow's latency budget. Here a
batch is handed to librdkafka and the worker moves on; librdkafka sends
within ``linger.ms``.

What is handed over must still be acknowledged before the epoch that produced
it counts as done, or a crash could lose a trigger whose event the snapshot
says was handled. This sink is therefore a *partitioned* (stateful) sink:
Bytewax snapshots its partitions at the end of each epoch they were written
in, and writes the epoch's recovery commit only after those snapshots. The
snapshot waits until every record handed over so far is acknowledged, and
fails (so the process stops and resumes from the previous commit) if any was
refused: the records of an epoch are acknowledged before it is committed,
without a wait per batch.
"""

from __future__ import annotations

import logging
import threading
import zlib

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger(__name__)

SinkMessage = KafkaSinkMessage[bytes, bytes]


class DeliveryFailed(RuntimeError):
    """Kafka refused a record for good (after librdkafka's own retries)."""


class _SharedProducer:
    """One producer per process and configuration, shared by every sink
    partition and output step (a librdkafka producer is thread-safe)."""

    _instances: dict[tuple[tuple[str, str], ...], _SharedProducer] = {}
    _lock = threading.Lock()

    def __init__(self, config: dict[str, str]) -> None:
        self.producer = Producer(config)
        self.failures: list[str] = []
        self._users = 0

    @classmethod
    def acquire(cls, config: dict[str, str]) -> _SharedProducer:
        key = tuple(sorted(config.items()))
        with cls._lock:
            shared = cls._instances.get(key)
            if shared is None:
                shared = cls._instances[key] = cls(config)
            shared._users += 1
            return shared

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
            if last:
                for key, shared in list(self._instances.items()):
                    if shared is self:
                        del self._instances[key]
        if last:
            self.producer.flush(30)

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            reason = f"{message.topic()}[{message.partition()}]: {error.str()}"
            log.error("Kafka refused a record: %s", reason)
            self.failures.append(reason)


class _SinkPartition(StatefulSinkPartition[SinkMessage, int]):
    def __init__(self, shared: _SharedProducer, flush_timeout_s: float) -> None:
        self._shared = shared
        self._flush_timeout_s = flush_timeout_s
        self._written = 0

    def write_batch(self, items: list[SinkMessage]) -> None:
        produce = self._shared.producer.produce
        on_delivery = self._shared.on_delivery
        for msg in items:
            while True:
                try:
                    produce(
                        msg.topic,  # type: ignore[arg-type]  # the flow's records name theirs
                        msg.value,
                        msg.key,
                        headers=msg.headers,  # type: ignore[arg-type]
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:  # librdkafka's queue is full: let it drain
                    self._shared.producer.poll(0.05)
        self._written += len(items)
        self._shared.producer.poll(0)  # serve acknowledgements that came in

    def snapshot(self) -> int:
        """The end of an epoch: everything handed over is acknowledged, or the
        epoch must not be committed (module docstring)."""
        producer = self._shared.producer
        left = producer.flush(self._flush_timeout_s)
        if left:
            raise DeliveryFailed(
                f"{left} record(s) not acknowledged by Kafka within "
                f"{self._flush_timeout_s:g} s; stopping so the epoch is replayed"
            )
        if self._shared.failures:
            raise DeliveryFailed(
                "Kafka refused record(s); stopping so the epoch is replayed: "
                + "; ".join(self._shared.failures[:5])
            )
        return self._written

    def close(self) -> None:
        self._shared.release()


class PulseKafkaSink(FixedPartitionedSink[SinkMessage, int]):
    """Items are ``(key, KafkaSinkMessage)``; the key picks the sink partition
    (one per worker of the flow, ``partitions``), so writes spread over workers."""

    def __init__(
        self, config: dict[str, str], partitions: int, flush_timeout_s: float = 60.0
    ) -> None:
        self._config = dict(config)
        self._partitions = partitions
        self._flush_timeout_s = flush_timeout_s

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self._partitions)]

    def part_fn(self, item_key: str) -> int:
        return zlib.adler32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _SinkPartition:
        return _SinkPartition(_SharedProducer.acquire(self._config), self._flush_timeout_s)
