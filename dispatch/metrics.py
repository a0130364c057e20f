"""The dispatcher's Prometheus metrics, on ``dispatch_metrics_port`` (0: off).

Each dispatcher process exports its own; Prometheus sums over instances. The
dead-letter topic's size is the one figure that is not the process's own: it
is read from Kafka's watermarks when scraped, at most every 15 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pulse.settings import Settings

log = logging.getLogger(__name__)

# Seconds, from 1 ms to a minute: deliveries are meant to take milliseconds,
# and retries with backoff stretch the tail.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class DispatchMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.deliveries = Counter(
            "pulse_dispatch_deliveries",
            "Triggers handled, by channel and outcome (sent, failed, expired, duplicate)",
            ["channel", "outcome"],
            registry=self.registry,
        )
        # Per rule as well, for the console's rules page (rules are tens, not
        # thousands, so the label stays small).
        self.rule_deliveries = Counter(
            "pulse_dispatch_rule_deliveries",
            "Triggers delivered or given up on, by rule and outcome (sent, failed)",
            ["rule", "outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "pulse_dispatch_retries",
            "Attempts that failed in a retriable way and were tried again, by channel",
            ["channel"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "pulse_dispatch_dead_letters",
            "Triggers this process put on the dead-letter topic, by channel",
            ["channel"],
            registry=self.registry,
        )
        self.attempt_seconds = Histogram(
            "pulse_dispatch_attempt_seconds",
            "Duration of one delivery attempt, by channel",
            ["channel"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "pulse_dispatch_delivery_seconds",
            "From the dispatcher reading a trigger to its outcome, retries included",
            ["channel"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "pulse_dispatch_in_flight",
            "Triggers read and not finished: sending (an attempt under way) or waiting (for "
            "a thread, a retry, another dispatcher's lease or the customer's previous trigger)",
            ["state"],
            registry=self.registry,
        )

    def serve(self, settings: Settings) -> None:
        """Export on ``dispatch_metrics_port`` (with the DLQ size), if set."""
        if not settings.dispatch_metrics_port:
            return
        self.registry.register(DeadLetterSize(settings))
        start_http_server(
            settings.dispatch_metrics_port, addr=settings.api_host, registry=self.registry
        )
        log.info(
            "metrics on http://%s:%d/metrics", settings.api_host, settings.dispatch_metrics_port
        )


class DeadLetterSize(Collector):
    """``pulse_dispatch_dlq_records``: records on the dead-letter topic (all
    partitions, end less start offsets), cached for 15 s."""

    def __init__(self, settings: Settings, max_age_s: float = 15.0) -> None:
        self._settings = settings
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._value: float = float("nan")
        self._at = 0.0
        self._consumer: Consumer | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._at > self._max_age_s:
                self._value = self._read()
                self._at = time.monotonic()
            value = self._value
        yield GaugeMetricFamily(
            "pulse_dispatch_dlq_records",
            "Records on the triggers dead-letter topic (NaN while Kafka is unreachable)",
            value=value,
        )

    def _read(self) -> float:
        topic = self._settings.triggers_dlq_topic
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    "bootstrap.servers": self._settings.kafka,
                    "group.id": f"{self._settings.consumer_group_prefix}.dispatch.metrics",
                }
            )
        try:
            partitions = self._consumer.list_topics(topic, timeout=5).topics[topic].partitions
            total = 0
            for p in partitions:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=5
                )
                total += max(0, high - low)
            return float(total)
        except (KafkaException, KeyError) as exc:
            log.warning("dead-letter topic size unavailable: %s", exc)
            return float("nan")
