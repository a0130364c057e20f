"""Unsubscribe and click links: signed, open to customers, recorded as events."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from pulse import links
from pulse.settings import Settings, load_settings
from tests.helpers import consume, value_of

SECRET = "links-test-secret-0123"


@pytest.fixture
def settings(pulse_settings: Settings) -> Settings:
    return load_settings(
        environ=pulse_settings.as_environ(),
        link_secret=SECRET,
        write_keys=["wk-0123456789"],
        read_keys=["rk-0123456789"],
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def claims(url: str | None = None) -> links.LinkClaims:
    return links.LinkClaims(
        trigger_id="trig-1", rule_id="win_back", customer_id="c-5", channel="email", url=url
    )


def test_unsubscribing_needs_no_key_and_becomes_one_event(
    api: TestClient, settings: Settings
) -> None:
    token = links.sign(claims(), SECRET)
    page = api.get(f"/v1/u/{token}")
    assert page.status_code == 200 and "no more marketing e-mails" in page.text
    one_click = api.post(f"/v1/u/{token}", content=b"List-Unsubscribe=One-Click")
    assert one_click.status_code == 200
    events = [orjson.loads(value_of(m)) for m in consume(settings, settings.events_topic, 2)]
    assert {e["event_id"] for e in events} == {"unsubscribe:trig-1"}  # counted once
    assert events[0]["type"] == "message_unsubscribed"
    assert (events[0]["customer_id"], events[0]["message_channel"]) == ("c-5", "email")


def test_a_click_is_recorded_and_redirected(api: TestClient, settings: Settings) -> None:
    token = links.sign(claims("https://shop.example/p/s-7"), SECRET)
    answer = api.get(f"/v1/r/{token}")
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://shop.example/p/s-7"
    [event] = [orjson.loads(value_of(m)) for m in consume(settings, settings.events_topic, 1)]
    assert event["type"] == "message_clicked" and event["rule_id"] == "win_back"


@pytest.mark.parametrize("path", ["/v1/u/", "/v1/r/"])
def test_a_forged_or_edited_link_is_refused(api: TestClient, path: str) -> None:
    forged = links.sign(claims("https://evil.example"), "another-secret-0123")
    assert api.get(path + forged).status_code == 404
    body, _, mac = links.sign(claims("https://shop.example"), SECRET).partition(".")
    assert api.get(path + body[:-2] + "xx." + mac).status_code == 404
    assert api.get(path + "nonsense").status_code == 404
