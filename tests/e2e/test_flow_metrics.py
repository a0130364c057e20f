"""``pulse run --metrics-port``: the dataflow process's own Prometheus metrics
(events read, lag per partition, batch update time), scraped from the running
process while real events go through it."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import free_port
from pulse.settings import Settings
from tests.helpers import PulseProcess, produce_events, wait_for

pytestmark = pytest.mark.e2e

EVENTS = 300


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)]; empty while the exporter is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(value for _labels, value in samples.get(name, []))


def test_events_lag_and_batch_update_time_are_exported(
    pulse_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    flow = PulseProcess(
        pulse_settings, tmp_path, "dataflow", "run", "--no-recovery", "--metrics-port", str(port)
    )
    try:
        wait_for(lambda: scrape(port) or not flow.alive(), 30, "the metrics exporter")
        assert flow.alive(), flow.log_text()[-3000:]
        produce_events(
            pulse_settings,
            (
                {
                    "type": "product_view",
                    "event_id": f"v-{i}",
                    "customer_id": f"c-{i % 40}",
                    "sku": f"SKU-{i % 7}",
                    "price": 5.0,
                    "category": "mugs",
                }
                for i in range(EVENTS)
            ),
        )

        def all_read() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            samples = scrape(port)
            done = total(samples, "pulse_flow_events_total") >= EVENTS
            caught_up = samples.get("pulse_flow_lag_records") and not total(
                samples, "pulse_flow_lag_records"
            )
            # Events are counted as they are read; the state steps time their
            # batches a moment later.
            handled = total(samples, "pulse_flow_batch_update_seconds_count") >= 1
            return samples if done and caught_up and handled else None

        samples = wait_for(all_read, 60, "every event read and handled, no lag left")
        assert total(samples, "pulse_flow_events_total") == EVENTS
        workers = {labels["worker"] for labels, _ in samples["pulse_flow_events_total"]}
        assert workers == {"0"}
        # One lag per partition the process read, named by topic and partition.
        lagged = {(lab["topic"], lab["partition"]) for lab, _ in samples["pulse_flow_lag_records"]}
        assert lagged <= {(pulse_settings.events_topic, str(p)) for p in range(2)}
        assert lagged
        # Batches, not events, are timed: fewer observations than events, at least one.
        batches = total(samples, "pulse_flow_batch_update_seconds_count")
        assert 1 <= batches <= EVENTS
        assert total(samples, "pulse_flow_batch_update_seconds_sum") > 0
    finally:
        flow.stop()
