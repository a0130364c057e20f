"""API keys with roles: write keys ingest, read keys do everything, no keys = open."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import KeyRing
from pulse.settings import Settings, load_settings

pytestmark = pytest.mark.integration

WRITE = "wk-0123456789"
READ = "rk-9876543210"

EVENT = orjson.dumps({"type": "page_view", "event_id": "p-1", "customer_id": "c-1"})
SEGMENT = orjson.dumps({"messageId": "m-1", "userId": "c-1", "event": "Cart Viewed"})

INGEST = [
    ("/v1/events", EVENT),
    ("/v1/events/batch", b'{"events": []}'),
    ("/v1/track", SEGMENT),
    ("/v1/batch", b'{"batch": []}'),
]
READS = [
    "/v1/customers/c-1/profile",
    "/v1/customers/c-1/recommendations",
    "/v1/customers/c-1/inbox",
]
OPEN = ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"]


def basic(user: str, password: str = "") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(pulse_settings: Settings) -> Iterator[TestClient]:
    settings = load_settings(
        environ=pulse_settings.as_environ(), write_keys=[WRITE], read_keys=[READ]
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("path", "body"), INGEST)
def test_ingest_without_a_key_is_401_with_a_challenge(
    keyed: TestClient, path: str, body: bytes
) -> None:
    response = keyed.post(path, content=body)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Basic" in response.headers["www-authenticate"]
    assert "Bearer" in response.headers["www-authenticate"]


@pytest.mark.parametrize(("path", "body"), INGEST)
@pytest.mark.parametrize("key", [WRITE, READ])
def test_write_and_read_keys_both_ingest(
    keyed: TestClient, path: str, body: bytes, key: str
) -> None:
    for headers in (basic(key), bearer(key)):
        response = keyed.post(path, content=body, headers=headers)
        assert response.status_code in (200, 202), response.text


@pytest.mark.parametrize(
    "headers",
    [
        basic("wrong"),
        bearer("wrong"),
        basic("", "wrong"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": f"Token {WRITE}"},
        basic(WRITE[:-1]),
        basic(WRITE + "x"),
    ],
)
def test_invalid_keys_are_401(keyed: TestClient, headers: dict[str, str]) -> None:
    for path in ["/v1/events", READS[0]]:
        response = keyed.request(
            "POST" if path == "/v1/events" else "GET", path, content=EVENT, headers=headers
        )
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"]


def test_key_as_basic_password_is_accepted_too(keyed: TestClient) -> None:
    assert keyed.post("/v1/events", content=EVENT, headers=basic("", WRITE)).status_code == 202


@pytest.mark.parametrize("path", READS)
def test_reads_need_a_read_key(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 401
    forbidden = keyed.get(path, headers=bearer(WRITE))
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == "application/problem+json"
    assert "read key" in forbidden.json()["detail"]
    for headers in (basic(READ), bearer(READ)):
        assert keyed.get(path, headers=headers).status_code in (200, 404)


@pytest.mark.parametrize("path", OPEN)
def test_health_and_docs_stay_open(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_segment_write_key_in_the_body(keyed: TestClient) -> None:
    batch = {"writeKey": WRITE, "batch": [orjson.loads(SEGMENT) | {"type": "track"}]}
    response = keyed.post("/v1/batch", content=orjson.dumps(batch))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    single = keyed.post(
        "/v1/track", content=orjson.dumps(orjson.loads(SEGMENT) | {"writeKey": READ})
    )
    assert single.status_code == 200, single.text
    wrong = keyed.post("/v1/batch", content=orjson.dumps(batch | {"writeKey": "nope"}))
    assert wrong.status_code == 401


def test_body_write_key_does_not_open_pulse_endpoints(keyed: TestClient) -> None:
    body = orjson.dumps(orjson.loads(EVENT) | {"writeKey": WRITE})
    assert keyed.post("/v1/events", content=body).status_code == 401


def test_without_keys_the_api_is_open_and_says_so(
    pulse_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="api.app"),
        TestClient(create_app(pulse_settings)) as client,
    ):
        assert client.post("/v1/events", content=EVENT).status_code == 202
        assert client.get(READS[1]).status_code == 200
        document = client.get("/openapi.json").json()
    assert any("open" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "securitySchemes" not in document["components"]
    assert "401" not in document["paths"]["/v1/events"]["post"]["responses"]


def test_with_keys_the_document_describes_the_schemes(keyed: TestClient) -> None:
    document = keyed.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"basic", "bearer"}
    events = document["paths"]["/v1/events"]["post"]
    assert len(events["security"]) == 2
    assert "401" in events["responses"]
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_keyring_roles() -> None:
    ring = KeyRing(write_keys=("w", "both"), read_keys=("r", "both"))
    assert not ring.open
    assert (ring.role("w"), ring.role("r"), ring.role("both"), ring.role("x")) == (
        "write",
        "read",
        "read",
        None,
    )
    assert ring.role("w\udcff") is None  # not UTF-8 encodable: still just "no"
    assert KeyRing((), ()).open
