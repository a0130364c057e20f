"""``/metrics`` on the API: a latency histogram per route template, method and
status class, on the real Redis and Kafka."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.metrics import LATENCY_BUCKETS
from benchmarks.common import free_port
from pulse.settings import Settings, load_settings

pytestmark = pytest.mark.integration

PROFILE = "/v1/customers/{customer_id}/profile"


@pytest.fixture
def api(pulse_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(pulse_settings)) as client:
        yield client


def counts(client: TestClient) -> dict[tuple[str, str, str], float]:
    """(route, method, status) -> requests counted, from the exposition."""
    response = client.get("/metrics")
    assert response.status_code == 200
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name != "pulse_api_request_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                labels = sample.labels
                out[(labels["route"], labels["method"], labels["status"])] = sample.value
    return out


def test_requests_are_counted_by_route_template_not_raw_path(api: TestClient) -> None:
    for customer in ("c-1", "c-2", "c-3"):
        assert api.get(f"/v1/customers/{customer}/profile").status_code == 404
    api.get("/healthz")
    seen = counts(api)
    assert seen[(PROFILE, "GET", "4xx")] == 3
    assert seen[("/healthz", "GET", "2xx")] == 1
    text = api.get("/metrics").text
    assert "c-1" not in text  # one series for every customer


def test_unmatched_paths_and_odd_methods_keep_the_labels_bounded(api: TestClient) -> None:
    for n in range(5):
        assert api.get(f"/no/such/path/{n}").status_code == 404
    assert api.request("BREW", "/healthz").status_code == 405
    seen = counts(api)
    assert seen[("unmatched", "GET", "4xx")] == 5
    assert seen[("/healthz", "other", "4xx")] == 1
    assert not any("/no/such" in route for route, _, _ in seen)


def test_buckets_resolve_sub_millisecond_latency(api: TestClient) -> None:
    api.get("/healthz")
    text = api.get("/metrics").text
    bounds = {
        float(m)
        for m in re.findall(r'pulse_api_request_seconds_bucket\{[^}]*le="([0-9.e+-]+)"', text)
    }
    assert bounds == {float(b) for b in LATENCY_BUCKETS}
    assert min(bounds) == 0.00025 and max(bounds) == 1.0
    families = {f.name: f for f in text_string_to_metric_families(text)}
    health = [
        s
        for s in families["pulse_api_request_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["route"] == "/healthz"
    ]
    cumulative = [s.value for s in sorted(health, key=lambda s: float(s.labels["le"]))]
    assert cumulative == sorted(cumulative) and cumulative[-1] == 1  # the +Inf bucket


def test_a_request_that_fails_with_an_exception_counts_as_5xx(pulse_settings: Settings) -> None:
    # Redis on a port where nothing listens: the profile route's read raises.
    broken = load_settings(
        environ=pulse_settings.as_environ(), redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    with TestClient(create_app(broken), raise_server_exceptions=False) as client:
        assert client.get("/v1/customers/c-1/profile").status_code == 500
        assert counts(client)[(PROFILE, "GET", "5xx")] == 1


def test_metrics_include_the_process_and_answer_openmetrics_when_asked(api: TestClient) -> None:
    text = api.get("/metrics").text
    assert "process_cpu_seconds_total" in text
    response = api.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
