"""The console's refusals and protections over HTTP, on the real Kafka and Redis:
no key, a write key, a read key on admin actions, a POST without its CSRF token."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from pulse.settings import Settings, load_settings

pytestmark = pytest.mark.integration

WRITE, READ, ADMIN = "ct-write-key", "ct-read-key", "ct-admin-key"
VIEWS = [
    "/console",
    "/console/overview/live",
    "/console/rules",
    "/console/rules/abandoned_cart",
    "/console/customers",
    "/console/charts",
]
PAGES = [*VIEWS, "/console/customers/nobody"]


@pytest.fixture
def app_settings(pulse_settings: Settings) -> Settings:
    return load_settings(
        environ=pulse_settings.as_environ(),
        write_keys=[WRITE],
        read_keys=[READ],
        admin_keys=[ADMIN],
    )


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings), follow_redirects=False) as c:
        yield c


def sign_in(client: TestClient, key: str) -> tuple[int, str]:
    page = client.get("/console/login").text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    answer = client.post("/console/login", data={"csrf": found.group(1), "key": key})
    return answer.status_code, answer.text


def csrf_of(client: TestClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/rules").text)
    assert found is not None
    return found.group(1)


def test_without_a_session_every_page_asks_for_a_key(client: TestClient) -> None:
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert "needs an API key" in answer.text, path
    # htmx's polling gets a fragment, not a whole login page.
    answer = client.get("/console/overview/live", headers={"HX-Request": "true"})
    assert answer.status_code == 401 and "<html" not in answer.text


def test_a_write_key_or_a_wrong_key_cannot_sign_in(client: TestClient) -> None:
    status, text = sign_in(client, WRITE)
    assert status == 403 and "write key" in text
    status, text = sign_in(client, "guess")
    assert status == 401 and "not valid" in text
    assert "pulse_console" not in client.cookies


def test_the_login_form_needs_its_double_submit_token(client: TestClient) -> None:
    answer = client.post("/console/login", data={"csrf": "forged", "key": READ})
    assert answer.status_code == 403 and "expired" in answer.text


def test_a_read_key_views_every_page_with_its_render_time(client: TestClient) -> None:
    status, _ = sign_in(client, READ)
    assert status == 303
    cookie = client.cookies.get("pulse_console")
    assert cookie is not None and READ not in cookie  # the key never goes into the cookie
    for path in VIEWS:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert answer.headers["server-timing"].startswith("render;dur="), path


def test_a_read_key_is_refused_admin_actions(client: TestClient) -> None:
    sign_in(client, READ)
    csrf = csrf_of(client)
    answer = client.post("/console/customers/c-1/erase", data={"csrf": csrf, "confirm": "c-1"})
    assert answer.status_code == 403 and "needs an admin key" in answer.text
    answer = client.get("/console/customers/c-1/export")
    assert answer.status_code == 403 and "needs an admin key" in answer.text
    answer = client.post(
        "/console/rules/abandoned_cart/deploy", data={"csrf": csrf, "text": "", "base": ""}
    )
    assert answer.status_code == 403 and "needs an admin key" in answer.text


def test_a_post_without_the_sessions_csrf_token_is_refused(client: TestClient) -> None:
    sign_in(client, ADMIN)
    for data in ({"confirm": "c-1"}, {"confirm": "c-1", "csrf": "forged"}):
        answer = client.post("/console/customers/c-1/erase", data=data)
        assert answer.status_code == 403 and "CSRF" in answer.text
    answer = client.post("/console/rules/abandoned_cart/check", data={"text": "id: x"})
    assert answer.status_code == 403


def test_an_admin_exports_and_the_check_reports_line_and_column(client: TestClient) -> None:
    sign_in(client, ADMIN)
    answer = client.get("/console/customers/c-1/export")
    assert answer.status_code == 200 and answer.json()["customer_id"] == "c-1"
    assert "attachment" in answer.headers["content-disposition"]
    csrf = csrf_of(client)
    answer = client.post(
        "/console/rules/abandoned_cart/check",
        data={"csrf": csrf, "text": "id: abandoned_cart\ntrigger: {event: add_to_kart}\n"},
    )
    assert answer.status_code == 200
    assert re.search(r"line 2, column \d+", answer.text), answer.text
