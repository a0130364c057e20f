"""The profile and recommendations reads, on the real Redis: what they answer, and
that they answer with msgspec-encoded bytes rather than a dict that FastAPI's
jsonable_encoder walks (the slow path a read in a page render cannot afford)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from engine.profile import CartItemView, ProfileView, encode_view
from engine.scores.features import FEATURES
from engine.scores.labels import PROPENSITY, Example, ScoreSettings
from engine.scores.serving import ScoreLearner, encode_features, encode_published
from pulse.keys import RedisKeys
from pulse.settings import Settings

pytestmark = pytest.mark.integration

NOW = time.time()
VIEW = ProfileView(
    customer_id="c-1",
    first_seen=NOW - 86400 * 40,
    last_seen=NOW - 60,
    events_total=12,
    event_counts={"product_view": 9, "order_completed": 2, "add_to_cart": 1},
    category_views={"candles": 5, "mugs": 1},
    category_affinity={"candles": 5.0, "mugs": 1.0},
    cart=[CartItemView("SKU-2", 1, 12.5, "candles", "Pine candle")],
    cart_value=12.5,
    cart_quantity=1,
    orders=2,
    revenue=80.0,
    average_order_value=40.0,
    last_order_at=NOW - 86400 * 3,
    orders_12m=2,
    spend_12m=80.0,
    segments=["repeat_buyers"],
)
ITEMS = [  # sku, category, popularity (log score)
    ("SKU-1", "mugs", 5.0),
    ("SKU-2", "candles", 4.0),
    ("SKU-3", "candles", 3.0),
    ("SKU-4", "garden", 2.0),
]


@pytest.fixture
def api(pulse_settings: Settings, redis_client: redis.Redis) -> Iterator[TestClient]:
    """The serving view written as the dataflow writes it (dataflows/redis_sink.py,
    dataflows/item_sink.py)."""
    keys = RedisKeys(pulse_settings.redis_prefix)
    raw: redis.Redis = redis.Redis.from_url(pulse_settings.redis)
    raw.hset(keys.profile("c-1"), "view", encode_view(VIEW))
    raw.close()
    for sku, category, score in ITEMS:
        redis_client.zadd(keys.ranking("popular"), {sku: score})
        redis_client.zadd(keys.ranking(f"popular:{category}"), {sku: score})
        redis_client.hset(
            keys.item(sku), mapping={"sku": sku, "name": f"Item {sku}", "category": category,
                                     "price": "9.5"}
        )  # fmt: skip
    with TestClient(create_app(pulse_settings)) as client:
        yield client


@pytest.fixture
def encoder_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every value FastAPI's route machinery hands to jsonable_encoder (a spy that
    still encodes, so the app behaves as usual)."""
    calls: list[Any] = []
    real = fastapi.routing.jsonable_encoder  # type: ignore[attr-defined]

    def spy(obj: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "jsonable_encoder", spy)
    return calls


def test_profile_is_the_whole_view_with_rfm(api: TestClient, encoder_calls: list[Any]) -> None:
    response = api.get("/v1/customers/c-1/profile")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = orjson.loads(response.content)
    assert encoder_calls == []
    # Every field of the view, those at their defaults too, as the document says.
    assert set(body) == set(ProfileView.__struct_fields__) | {"rfm", "scores"}
    assert body["scores"] is None  # no features written: not scored
    assert body["tier"] == "" and body["refunds"] == 0 and body["open_tickets"] == []
    assert body["cart"] == [
        {"sku": "SKU-2", "quantity": 1, "price": 12.5, "category": "candles", "name": "Pine candle"}
    ]
    assert body["rfm"]["frequency"] == 2 and body["rfm"]["score"][1] == "2"
    # Three days at the module's import, up to now when asked (in a full CI run
    # the import is many minutes before the request), served to 1/100 of a day.
    since = (time.time() - VIEW.last_order_at) / 86400
    assert 3.0 <= body["rfm"]["days_since_last_order"] <= round(since, 2)


def test_profile_scores_a_customer_with_the_published_models(
    api: TestClient, pulse_settings: Settings, redis_client: redis.Redis
) -> None:
    """The dataflow stores a customer's features and publishes the models
    (dataflows/score_models.py); the profile scores the one with the other."""
    keys = RedisKeys(pulse_settings.redis_prefix)
    x = tuple(float(i % 3) for i in range(len(FEATURES)))
    redis_client.hset(keys.profile("c-1"), "x", encode_features(NOW - 60, x))
    untrained = orjson.loads(api.get("/v1/customers/c-1/profile").content)["scores"]
    assert untrained["examples"] == 0 and untrained["purchase_propensity"] == 0.5
    assert untrained["propensity_days"] == 7.0 and untrained["scored_at"] == NOW - 60

    learner = ScoreLearner(ScoreSettings())
    buyer = tuple(1.0 for _ in FEATURES)
    examples = [
        Example(PROPENSITY, f"c{i}", NOW, NOW, buyer if i % 2 else x, float(i % 2), 0.0, True)
        for i in range(400)
    ]
    learner.learn(examples)
    redis_client.set(keys.model("scores"), encode_published(learner.published()))
    scores = orjson.loads(api.get("/v1/customers/c-1/profile").content)["scores"]
    assert scores["examples"] == 400
    assert scores["purchase_propensity"] < 0.2  # x is like those who did not order
    assert scores["churn_risk"] == 0.5  # nothing learned about churn yet

    redis_client.set(keys.model("scores"), b"not the models")
    kept = orjson.loads(api.get("/v1/customers/c-1/profile").content)["scores"]
    assert kept == scores  # unreadable models: the last good ones stay


def test_recommendations_favour_categories_and_leave_the_cart_out(
    api: TestClient, encoder_calls: list[Any]
) -> None:
    response = api.get("/v1/customers/c-1/recommendations", params={"k": 2})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert encoder_calls == []
    body = orjson.loads(response.content)
    assert body["customer_id"] == "c-1" and body["strategy"] == "personalised"
    assert body["context"] == "home"
    # SKU-2 is in the cart; SKU-3 is there for its category (candles, the
    # favourite), SKU-1 for being the most popular item.
    by_sku = {item["sku"]: item for item in body["items"]}
    assert set(by_sku) == {"SKU-3", "SKU-1"}
    assert by_sku["SKU-3"]["category"] == "candles"
    # The old parameter name still works.
    old = api.get("/v1/customers/c-1/recommendations", params={"limit": 1}).json()
    assert len(old["items"]) == 1


def test_an_unknown_customer_gets_popular_items(api: TestClient) -> None:
    body = api.get("/v1/customers/nobody/recommendations").json()
    assert [item["sku"] for item in body["items"]] == ["SKU-1", "SKU-2", "SKU-3", "SKU-4"]
    assert {item["reason"] for item in body["items"]} == {"popular"}
    assert body["strategy"] == "trending"


@pytest.mark.parametrize(
    "query",
    ["context=shelf", "context=product:", "k=0", "k=101", "include=x" + "&include=x" * 60],
)
def test_bad_parameters_get_a_4xx_that_says_which(api: TestClient, query: str) -> None:
    response = api.get(f"/v1/customers/c-1/recommendations?{query}")
    assert response.status_code == 422, response.text
    assert query.split("=")[0] in response.text


def test_the_spy_sees_a_route_that_returns_a_dict(encoder_calls: list[Any]) -> None:
    """What these routes did before: a dict, no response model."""
    app = fastapi.FastAPI()

    @app.get("/dict", response_model=None)
    async def as_dict() -> Any:
        return {"customer_id": "c-1"}

    assert TestClient(app).get("/dict").json() == {"customer_id": "c-1"}
    assert encoder_calls == [{"customer_id": "c-1"}]
