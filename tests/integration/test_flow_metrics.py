"""The dataflow's metrics against the real Kafka: lag is a partition's end less
the position batches reached; nothing is counted while the exporter is off."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from dataflows.metrics import FlowMetrics, PartitionLag
from pulse.settings import Settings
from tests.helpers import produce, wait_for

pytestmark = pytest.mark.integration


def lag_of(collector: PartitionLag) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            out[(sample.labels["topic"], sample.labels["partition"])] = sample.value
    return out


def test_lag_is_the_partitions_end_less_the_position_reached(pulse_settings: Settings) -> None:
    topic = pulse_settings.events_topic
    produce(pulse_settings, topic, ((b"k", b"{}") for _ in range(10)))
    # Every record on one partition (one key): find which, from the broker's ends.
    positions: dict[str, int] = {f"{topic}:0": 0, f"{topic}:1": 0}
    collector = PartitionLag(pulse_settings, positions, max_age_s=0.0)
    ends = lag_of(collector)
    assert sorted(ends.values()) == [0.0, 10.0]
    full = next(p for (_t, p), lag in ends.items() if lag == 10.0)
    positions[f"{topic}:{full}"] = 7
    assert lag_of(collector)[(topic, full)] == 3.0
    positions[f"{topic}:{full}"] = 10
    assert lag_of(collector)[(topic, full)] == 0.0


def test_a_position_past_a_cached_end_is_no_negative_lag(pulse_settings: Settings) -> None:
    topic = pulse_settings.events_topic
    positions = {f"{topic}:0": 0}
    collector = PartitionLag(pulse_settings, positions, max_age_s=3600.0)
    # A topic created a moment ago may have no leader yet ("not leader for
    # partition"): no figure then, by design, and the next scrape asks again.
    wait_for(lambda: lag_of(collector) == {(topic, "0"): 0.0}, 15, "the partition's end")
    produce(pulse_settings, topic, ((b"k", b"{}") for _ in range(5)))
    positions[f"{topic}:0"] = 5  # read since the end was cached
    assert lag_of(collector) == {(topic, "0"): 0.0}


def test_off_by_default_and_inert_when_off() -> None:
    metrics = FlowMetrics()
    assert metrics.serve(Settings()) is None  # flow_metrics_port 0
    metrics.read(0, 100, {"t:0": 100})
    metrics.batch_decoded()
    metrics.batch_updated()
    samples = {s.name: s.value for f in metrics.registry.collect() for s in f.samples}
    assert samples.get("pulse_flow_batch_update_seconds_count", 0) == 0
    assert "pulse_flow_events_total" not in samples  # no worker counted


def test_batches_are_timed_from_decode_to_update_and_counted_per_worker() -> None:
    metrics = FlowMetrics()
    metrics.enabled = True  # as serve() leaves it, without opening a port
    metrics.read(0, 120, {"t:0": 120})
    metrics.read(0, 30, {"t:0": 150})
    metrics.read(1, 5, {"t:1": 5})
    metrics.batch_updated()  # a timer's output, no batch decoded: not timed
    metrics.batch_decoded()
    metrics.batch_updated()
    samples = [(s.name, s.labels, s.value) for f in metrics.registry.collect() for s in f.samples]
    events = {
        labels["worker"]: v for name, labels, v in samples if name == "pulse_flow_events_total"
    }
    assert events == {"0": 150.0, "1": 5.0}
    count = next(v for name, _l, v in samples if name == "pulse_flow_batch_update_seconds_count")
    assert count == 1
