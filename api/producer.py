"""An asyncio face on confluent-kafka's Producer: await the broker's acknowledgement."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer


class KafkaUnavailable(RuntimeError):
    """The write was not acknowledged in time; the client should retry later."""


class AckProducer:
    """Idempotent, acks=all producer whose ``send`` returns once Kafka has the record.

    A background thread polls for delivery reports so request handlers never
    block the event loop.
    """

    def __init__(self, bootstrap: str, timeout_s: float = 5.0) -> None:
        self._timeout_s = timeout_s
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": "true",
                "acks": "all",
                "linger.ms": "1",
                "compression.type": "lz4",
                # Give up on a record well before the client's patience runs out.
                "message.timeout.ms": str(int(timeout_s * 1000)),
                "socket.connection.setup.timeout.ms": "2000",
            }
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-acks", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            def settle() -> None:
                if done.done():
                    return
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(KafkaUnavailable(str(err)))

            loop.call_soon_threadsafe(settle)

        try:
            self._producer.produce(
                topic, key=key, value=value, headers=headers, on_delivery=on_delivery
            )
        except BufferError as exc:
            raise KafkaUnavailable("producer queue full") from exc
        except KafkaException as exc:
            raise KafkaUnavailable(str(exc)) from exc
        try:
            await asyncio.wait_for(done, self._timeout_s + 1.0)
        except TimeoutError as exc:
            raise KafkaUnavailable("no acknowledgement from Kafka in time") from exc

    def close(self) -> None:
        self._producer.flush(self._timeout_s)
        self._stop.set()
        self._poller.join(timeout=2)
