"""The dataflow's Prometheus metrics, on ``flow_metrics_port`` (``pulse run
--metrics-port``; 0: off), at ``http://<api_host>:<port>/metrics``.

- ``pulse_flow_events_total{worker}``: events read (dead letters included);
  ``rate()`` of it is the events/s.
- ``pulse_flow_lag_records{topic,partition}``: records of each events
  partition this process reads that it has not read yet: the partition's end,
  asked of Kafka when scraped (at most every ``LAG_MAX_AGE_S``), less the
  position its batches last reached.
- ``pulse_flow_batch_update_seconds``: per batch, from its decode (``route``)
  to the state and model updates done (``gather``, after the identity and
  customer state steps): the engine's work on the batch plus Bytewax's
  hand-over between the steps.
- ``pulse_flow_model_update_seconds{model}`` and
  ``pulse_flow_model_examples_total{model}``: per batch of labelled examples,
  the time the score models took to test and learn them, and how many
  (dataflows/score_models.py).
- ``pulse_flow_nba_decisions_total{action,how}``: next-best-action decisions
  made by the policies of this process, ``how`` = ``model`` (the bandit's
  best), ``explored``, ``holdout`` or ``forced`` (only the control eligible).
- ``pulse_flow_nba_outcomes_total{action,reason,group}`` and
  ``pulse_flow_nba_reward_total{action,group}``: decisions settled and the
  reward they earned (after the action's weight), ``group`` = ``holdout`` or
  ``policy``: reward per outcome of the two groups is the policy's lift.

The hot path pays per batch, never per event: the sink that already counts
batches for ``pulse status`` (dataflows/progress_sink.py) adds the count and
positions, and the two batch steps read a clock each. With the port at 0 the
calls return at once. Each process of a cluster exports its own (process
``i`` on ``port + i``, so several fit on one machine); Prometheus sums them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.nba.records import Decision, Effect
from pulse.settings import Settings

log = logging.getLogger(__name__)

LAG_MAX_AGE_S = 5.0
# Seconds, 0.25 ms to 10 s: a live batch of a few events takes about a
# millisecond, a full catching-up batch (2,000 events) a few hundred.
BATCH_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class FlowMetrics:
    """A dataflow process's metrics; inert (every call returns at once) until
    ``serve`` starts the exporter."""

    def __init__(self) -> None:
        self.enabled = False
        self.registry = CollectorRegistry()
        self.events = Counter(
            "pulse_flow_events",
            "Events read by the dataflow (dead letters included), by worker",
            ["worker"],
            registry=self.registry,
        )
        self.batch_update_seconds = Histogram(
            "pulse_flow_batch_update_seconds",
            "Per batch, from its decode to the identity and customer state updates "
            "done (effects gathered)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_update_seconds = Histogram(
            "pulse_flow_model_update_seconds",
            "Per batch of labelled examples, the time the models took to test and learn them",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_examples = Counter(
            "pulse_flow_model_examples",
            "Labelled examples the models learned",
            ["model"],
            registry=self.registry,
        )
        self.nba_decisions = Counter(
            "pulse_flow_nba_decisions",
            "Next-best-action decisions, by action and how it was chosen",
            ["action", "how"],
            registry=self.registry,
        )
        self.nba_outcomes = Counter(
            "pulse_flow_nba_outcomes",
            "Next-best-action decisions settled, by action, reason and group",
            ["action", "reason", "group"],
            registry=self.registry,
        )
        self.nba_reward = Counter(
            "pulse_flow_nba_reward",
            "Reward earned by settled next-best-action decisions (after the action's weight)",
            ["action", "group"],
            registry=self.registry,
        )
        self._workers: dict[int, Counter] = {}
        self._positions: dict[str, int] = {}  # "topic:partition" -> next offset to read
        self._started = threading.local()  # per worker thread: when its batch was decoded

    def serve(self, settings: Settings, process_id: int | None = None) -> int | None:
        """Start the exporter on ``flow_metrics_port`` (+ the process's index in
        a cluster); the port, or None when off."""
        if not settings.flow_metrics_port:
            return None
        port = settings.flow_metrics_port + (process_id or 0)
        self.registry.register(PartitionLag(settings, self._positions))
        start_http_server(port, addr=settings.api_host, registry=self.registry)
        self.enabled = True
        log.info("dataflow metrics on http://%s:%d/metrics", settings.api_host, port)
        return port

    def read(self, worker: int, events: int, positions: dict[str, int]) -> None:
        """A worker's batches reached ``positions`` and read ``events`` more events."""
        if not self.enabled:
            return
        counter = self._workers.get(worker)
        if counter is None:
            counter = self._workers[worker] = self.events.labels(str(worker))
        counter.inc(events)
        # Whole values replace whole values: safe to read from the exporter's thread.
        self._positions.update(positions)

    def batch_decoded(self) -> None:
        """A worker decoded a batch (``route``): its update starts."""
        if self.enabled:
            self._started.at = time.perf_counter()

    def batch_updated(self) -> None:
        """The worker's state steps answered for its batch (``gather``)."""
        if not self.enabled:
            return
        started: float | None = getattr(self._started, "at", None)
        if started is not None:
            # Timers fire without a batch: only a gather after a decode counts.
            self._started.at = None
            self.batch_update_seconds.observe(time.perf_counter() - started)

    def models_updated(self, examples: int, seconds: float, model: str = "scores") -> None:
        """The score models learned a batch of ``examples`` in ``seconds``."""
        if not self.enabled:
            return
        self.model_update_seconds.labels(model).observe(seconds)
        self.model_examples.labels(model).inc(examples)

    def nba(self, effects: list[Effect]) -> None:
        """A policy's decisions and outcomes (dataflows/nba_step.py)."""
        if not self.enabled:
            return
        for effect in effects:
            if isinstance(effect, Decision):
                how = (
                    "holdout"
                    if effect.holdout
                    else "forced"
                    if effect.forced
                    else "explored"
                    if effect.explored
                    else "model"
                )
                self.nba_decisions.labels(effect.action, how).inc()
            else:
                group = "holdout" if effect.holdout else "policy"
                self.nba_outcomes.labels(effect.action, effect.reason, group).inc()
                if effect.reward:
                    self.nba_reward.labels(effect.action, group).inc(effect.reward)


class PartitionLag(Collector):
    """``pulse_flow_lag_records``: each partition's end (asked of Kafka, cached
    ``LAG_MAX_AGE_S``) less the position this process's batches reached."""

    def __init__(
        self, settings: Settings, positions: dict[str, int], max_age_s: float = LAG_MAX_AGE_S
    ) -> None:
        self._settings = settings
        self._positions = positions
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._ends: dict[str, int] = {}
        self._at = 0.0
        self._consumer: Consumer | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pulse_flow_lag_records",
            "Records of an events partition this process reads that it has not read yet",
            labels=["topic", "partition"],
        )
        positions = dict(self._positions)
        with self._lock:
            if time.monotonic() - self._at > self._max_age_s or set(positions) - set(self._ends):
                self._ends = self._read_ends(positions)
                self._at = time.monotonic()
            ends = self._ends
        for source, position in sorted(positions.items()):
            end = ends.get(source)
            if end is None:
                continue  # Kafka did not answer: no figure rather than a wrong one
            topic, partition = source.rsplit(":", 1)
            family.add_metric([topic, partition], float(max(0, end - position)))
        yield family

    def _read_ends(self, positions: dict[str, int]) -> dict[str, int]:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    "bootstrap.servers": self._settings.kafka,
                    "group.id": f"{self._settings.consumer_group_prefix}.flow.metrics",
                    "enable.auto.commit": "false",
                }
            )
        ends: dict[str, int] = {}
        for source in positions:
            topic, partition = source.rsplit(":", 1)
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, int(partition)), timeout=5
                )
            except KafkaException as exc:
                log.warning("the end of %s is unknown, no lag for it: %s", source, exc)
                continue
            ends[source] = int(high)
        return ends


FLOW_METRICS = FlowMetrics()
"""The process's metrics: one registry per process, as its exporter is."""
