"""Next-best-action reads and reward calls, on the real Redis and Kafka: the live
decision as the dataflow's sink writes it, the control action when there is
none, and rewards that become duplicate-proof events on the events topic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from dataflows.nba_step import NBA_FIELD, RedisNbaSink
from engine.nba.records import Decision, Outcome, served
from engine.profile import ProfileView, encode_view
from pulse.keys import RedisKeys
from pulse.settings import Settings, load_settings
from tests.helpers import consume, value_of

pytestmark = pytest.mark.integration

WRITE = "nba-write-key"
READ = "nba-read-key"
NOW = time.time()


def _decision(customer: str, decision_id: str, at: float, action: str = "discount") -> Decision:
    return Decision(
        decision_id=decision_id,
        customer_id=customer,
        at=at,
        expires_at=at + 3600,
        action=action,
        params={"percent": 10, "min_cart": 20.0},
        eligible=("discount", "nothing"),
        propensity=0.975,
        origin="e-1",
        context_version="v1",
        profile_version=3,
        features={"bias": 1.0},
    )


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(pulse_settings: Settings) -> RedisKeys:
    return RedisKeys(pulse_settings.redis_prefix)


@pytest.fixture
def raw_redis(pulse_settings: Settings) -> Iterator[redis.Redis]:
    client: redis.Redis = redis.Redis.from_url(pulse_settings.redis)
    yield client
    client.close()


@pytest.fixture
def sink(pulse_settings: Settings, keys: RedisKeys) -> Iterator[Any]:
    """The dataflow's serving sink, as the flow builds it."""
    partition = RedisNbaSink(pulse_settings.redis, keys).build("nba_serving", 0, 1)
    yield partition
    partition.close()


@pytest.fixture
def api(pulse_settings: Settings) -> Iterator[TestClient]:
    settings = load_settings(
        environ=pulse_settings.as_environ(), write_keys=[WRITE], read_keys=[READ]
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_sink_serves_the_latest_decision_only_on_an_existing_profile(
    sink: Any, keys: RedisKeys, raw_redis: redis.Redis
) -> None:
    raw_redis.hset(keys.profile("ann"), "view", b"\x80")
    first, second = _decision("ann", "d1", NOW - 10), _decision("ann", "d2", NOW, "bundle")
    settled = Outcome(
        decision_id="d1",
        customer_id="ann",
        action="discount",
        decided_at=NOW - 10,
        settled_at=NOW,
        reward=0.0,
        reason="superseded",
    )
    ghost = _decision("gone", "d3", NOW)  # no profile: erased, or handed over
    sink.write_batch([("nba:0", [first, settled, second, ghost])])
    served = msgspec.json.decode(raw_redis.hget(keys.profile("ann"), NBA_FIELD) or b"")
    # The website's part of the decision; the whole record is on the nba topic.
    assert served == {
        "decision_id": "d2",
        "action": "bundle",
        "at": NOW,
        "expires_at": NOW + 3600,
        "params": {"percent": 10, "min_cart": 20.0},
    }
    assert raw_redis.hget(keys.profile("ann"), "view") == b"\x80"  # the view is left alone
    assert not raw_redis.exists(keys.profile("gone"))
    # Every decision whose window is open can be rewarded, until its window ends.
    for did, customer in (("d1", b"ann"), ("d2", b"ann"), ("d3", b"gone")):
        assert raw_redis.get(keys.nba_decision(did)) == customer
        assert 0 < raw_redis.ttl(keys.nba_decision(did)) <= 3601
    # A replayed old decision (window over) takes no reward key.
    sink.write_batch([("nba:0", [_decision("ann", "old", NOW - 7200)])])
    assert not raw_redis.exists(keys.nba_decision("old"))


def test_next_action_serves_the_live_decision(
    api: TestClient, sink: Any, keys: RedisKeys, raw_redis: redis.Redis
) -> None:
    raw_redis.hset(keys.profile("bob"), "view", b"\x80")
    sink.write_batch([("nba:0", [_decision("bob", "d-bob", NOW - 5)])])
    response = api.get("/v1/customers/bob/next-action", headers=_bearer(READ))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "customer_id": "bob",
        "action": "discount",
        "decision_id": "d-bob",
        "params": {"percent": 10, "min_cart": 20.0},
        "decided_at": NOW - 5,
        "expires_at": NOW - 5 + 3600,
    }


@pytest.mark.parametrize("customer", ["nobody", "expired"])
def test_without_a_live_decision_the_answer_is_the_control_action(
    api: TestClient, keys: RedisKeys, raw_redis: redis.Redis, customer: str
) -> None:
    old = _decision("expired", "d-old", NOW - 7200)  # window ended an hour ago
    raw_redis.hset(keys.profile("expired"), NBA_FIELD, msgspec.json.encode(served(old)))
    response = api.get(f"/v1/customers/{customer}/next-action", headers=_bearer(READ))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "customer_id": customer,
        "action": "nothing",
        "decision_id": None,
        "params": {},
        "decided_at": None,
        "expires_at": None,
    }


def test_next_action_needs_a_read_key(api: TestClient) -> None:
    assert api.get("/v1/customers/bob/next-action").status_code == 401
    assert api.get("/v1/customers/bob/next-action", headers=_bearer(WRITE)).status_code == 403


def test_a_reward_becomes_a_duplicate_proof_event(
    api: TestClient, pulse_settings: Settings, keys: RedisKeys, raw_redis: redis.Redis
) -> None:
    raw_redis.set(keys.nba_decision("d-cat"), "cat", ex=600)
    raw_redis.set(keys.nba_decision("d-anon"), "anon:a-77", ex=600)
    # A write key may reward (the website's key); the body is optional.
    first = api.post(
        "/v1/decisions/d-cat/reward", content=b'{"value": 0.5}', headers=_bearer(WRITE)
    )
    assert first.status_code == 202, first.text
    assert first.json() == {
        "status": "accepted",
        "decision_id": "d-cat",
        "event_id": "decision_reward:d-cat",
        "value": 0.5,
    }
    again = api.post("/v1/decisions/d-cat/reward", headers=_bearer(READ))
    assert again.status_code == 202 and again.json()["value"] == 1.0
    anon = api.post("/v1/decisions/d-anon/reward", content=b"{}", headers=_bearer(WRITE))
    assert anon.status_code == 202, anon.text
    records = consume(pulse_settings, pulse_settings.events_topic, 3)
    events = [(msg.key(), orjson.loads(value_of(msg))) for msg in records]
    assert len(events) == 3
    by_value = sorted(events, key=lambda kv: (kv[1]["event_id"], kv[1]["properties"]["value"]))
    (anon_key, anon_event), (key_a, a), (key_b, b) = by_value
    assert key_a == key_b == b"cat" and anon_key == b"anon:a-77"
    # The same event id each time: the engine drops the retry as a duplicate.
    assert a["event_id"] == b["event_id"] == "decision_reward:d-cat"
    assert a["type"] == "custom" and a["name"] == "decision_reward"
    assert a["customer_id"] == "cat" and a["timestamp"]
    assert [a["properties"], b["properties"]] == [
        {"decision_id": "d-cat", "value": 0.5},
        {"decision_id": "d-cat", "value": 1.0},
    ]
    assert anon_event["anonymous_id"] == "a-77" and "customer_id" not in anon_event


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"value": 1.5}', "value"),
        (b'{"value": -0.1}', "value"),
        (b'{"value": "high"}', "value"),
        (b'{"valu": 1}', ""),
        (b"[1]", ""),
        (b"{", ""),
    ],
)
def test_a_bad_reward_is_422_naming_the_field(
    api: TestClient, keys: RedisKeys, raw_redis: redis.Redis, body: bytes, field: str
) -> None:
    raw_redis.set(keys.nba_decision("d-dan"), "dan", ex=600)
    response = api.post("/v1/decisions/d-dan/reward", content=body, headers=_bearer(WRITE))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["field"] == field
    if field:
        assert field in problem["detail"]


def test_an_unknown_or_expired_decision_is_404(api: TestClient) -> None:
    response = api.post("/v1/decisions/no-such/reward", headers=_bearer(WRITE))
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "decision_id" in response.json()["detail"]
    assert api.post("/v1/decisions/no-such/reward").status_code == 401


def test_an_erasure_takes_the_live_decision_and_its_reward_key(
    api: TestClient, sink: Any, keys: RedisKeys, raw_redis: redis.Redis
) -> None:
    raw_redis.hset(keys.profile("eve"), "view", encode_view(ProfileView(customer_id="eve")))
    sink.write_batch([("nba:0", [_decision("eve", "d-eve", NOW)])])
    assert raw_redis.get(keys.nba_decision("d-eve")) == b"eve"
    response = api.delete("/v1/customers/eve", headers=_bearer(READ))
    assert response.status_code == 202, response.text
    assert not raw_redis.exists(keys.profile("eve"), keys.nba_decision("d-eve"))
