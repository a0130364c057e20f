"""POST /v1/rules/validate: the same verdict as `pulse rules check`, for editors and the console."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from pulse.settings import Settings, load_settings

pytestmark = pytest.mark.integration

READ = "rk-rules-0123456789"
WRITE = "wk-rules-0123456789"
AUTH = {"Authorization": f"Bearer {READ}"}

GOOD = """
id: view_ping
trigger: {event: product_view, when: "item.views >= 2"}
action: {channel: webhook, template: ping}
category: transactional
"""

BAD = """id: view_ping
trigger:
  event: product_veiw
  when: profile.ordres > 1
action: {channel: emial, template: ping}
"""


@pytest.fixture
def client(pulse_settings: Settings) -> Iterator[TestClient]:
    settings = load_settings(
        environ=pulse_settings.as_environ(), read_keys=[READ], write_keys=[WRITE]
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_a_valid_rule_is_checked_with_the_shipped_set(client: TestClient) -> None:
    response = client.post(
        "/v1/rules/validate", json={"files": {"view_ping.yaml": GOOD}}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is True and body["problems"] == []
    assert body["rules"] == 12  # the 11 shipped rules and this one
    assert len(body["version"]) == 12


def test_every_problem_comes_with_its_line_and_column(client: TestClient) -> None:
    response = client.post(
        "/v1/rules/validate",
        json={"files": {"view_ping.yaml": BAD}, "alone": True},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is False and body["version"] is None
    found = {(p["line"], p["column"]): p["message"] for p in body["problems"]}
    assert "did you mean `product_view`" in found[(3, 10)]
    assert "did you mean `orders`" in found[(4, 17)]
    assert 'did you mean "email"' in found[(5, 19)]
    assert body["problems"][0]["text"].startswith("view_ping.yaml:3:10: ")


def test_a_posted_file_replaces_the_shipped_one_of_the_same_name(client: TestClient) -> None:
    broken = "id: welcome\ntrigger: {event: identify}\naction: {channel: email}\n"
    response = client.post(
        "/v1/rules/validate", json={"files": {"welcome.yaml": broken}}, headers=AUTH
    )
    body = response.json()
    assert body["valid"] is False
    assert [p["file"] for p in body["problems"]] == ["welcome.yaml"]
    assert "template" in body["problems"][0]["message"]


def test_a_malformed_request_is_422_naming_the_field(client: TestClient) -> None:
    response = client.post("/v1/rules/validate", json={"files": {"a.yaml": 3}}, headers=AUTH)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "files[...]"


def test_validation_needs_a_read_key(client: TestClient) -> None:
    body = {"files": {"view_ping.yaml": GOOD}}
    assert client.post("/v1/rules/validate", json=body).status_code == 401
    write_only = {"Authorization": f"Bearer {WRITE}"}
    assert client.post("/v1/rules/validate", json=body, headers=write_only).status_code == 403
