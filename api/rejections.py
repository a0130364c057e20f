"""Calls the collector refuses, kept in sight: dead-lettered and counted.

Segment's libraries report nothing about the calls of a batch that the server
refuses (the batch as a whole was answered 200), so a refusal that only lived
in the per-item result would be lost. Each refused call therefore also goes to
``<prefix>.events.dlq`` as the dataflow's dead letters do (the original JSON
as the value, the reason in a header) and is counted in
``pulse_api_rejected_calls_total``, which an operator can alert on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from api.producer import AckProducer, KafkaUnavailable
from pulse.settings import Settings

log = logging.getLogger(__name__)

MAX_REASON_BYTES = 4000  # as the dataflow's dead letters (dataflows/kafka_io.py)


@dataclass(frozen=True, slots=True)
class Rejected:
    """One refused call: the route it came by, its type ("" when not even that
    was readable), why, the JSON as sent, and its index in a batch."""

    route: str
    call: str
    reason: str
    raw: bytes
    index: int | None = None


class Rejections:
    """Puts refused calls on the events dead-letter topic and counts them."""

    def __init__(
        self, settings: Settings, producer: AckProducer, registry: CollectorRegistry
    ) -> None:
        self._topic = settings.events_dlq_topic
        self._producer = producer
        self.rejected = Counter(
            "pulse_api_rejected_calls",
            "Calls the collector refused (each also on the events dead-letter topic), "
            "by route and call type",
            ["route", "type"],
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "pulse_api_dead_letter_failures",
            "Refused calls that Kafka did not take on the dead-letter topic (logged instead)",
            ["route"],
            registry=registry,
        )

    async def record(self, rejected: Sequence[Rejected], received_at: float) -> None:
        """Count each call and wait for Kafka to have its dead letter.

        A dead letter Kafka does not take is logged with the reason and counted
        in ``pulse_api_dead_letter_failures_total``; the client's answer does
        not change (it already says the call was refused).
        """
        if not rejected:
            return
        for call in rejected:
            self.rejected.labels(call.route, call.call or "unknown").inc()
        sends = [self._send(call, received_at) for call in rejected]
        results = await asyncio.gather(*sends, return_exceptions=True)
        for call, result in zip(rejected, results, strict=True):
            if isinstance(result, KafkaUnavailable):
                self.dead_letter_failures.labels(call.route).inc()
                log.warning(
                    "refused %s call (index %s) not dead-lettered (%s): %s",
                    call.route,
                    call.index,
                    result,
                    call.reason,
                )
            elif isinstance(result, BaseException):
                raise result

    async def _send(self, call: Rejected, received_at: float) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("pulse.reason", call.reason.encode()[:MAX_REASON_BYTES]),
            ("pulse.source.route", call.route.encode()),
            ("pulse.source.type", call.call.encode()),
            ("pulse.received_at", repr(received_at).encode()),
        ]
        if call.index is not None:
            headers.append(("pulse.source.index", str(call.index).encode()))
        key = f"api:{call.route}".encode()
        await self._producer.send(self._topic, key, call.raw, headers)
