"""Recommendations and similar items, ranked in the request from serving views.

The dataflow keeps the views (dataflows/item_sink.py: similar items per item,
popular and trending lists overall and per category; dataflows/redis_sink.py:
the profile and the customer's items); a request reads what it needs in two
pipelined round trips and ranks in-process with engine/recs/ranker.py, so a
click a second ago shows in the next answer and no model runs in the request
beyond a few hundred additions.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Query

from api import auth, deps, ingest, schemas
from api.problems import ProblemError
from api.routes.customers import PROFILE_FIELD
from engine.profile import decode_view
from engine.recs.ranker import (
    MAX_K,
    Request,
    Sources,
    anchors,
    categories_wanted,
    parse_context,
    recommend,
    shopper_from_view,
)
from engine.recs.relations import Similar, decode_similar
from engine.recs.shopper import decode_items
from engine.recs.trending import POPULAR, TRENDING
from pulse.keys import RedisKeys

router = APIRouter(tags=["recommendations"], dependencies=[Depends(auth.require_read)])

ITEMS_FIELD = "items"  # the customer's items beside the view (dataflows/redis_sink.py)
LIST_READ = 50  # items read from each popularity list


@router.get(
    "/v1/customers/{customer_id}/recommendations",
    summary="Items to show this customer",
    response_model=None,
    responses={
        200: schemas.ok("Recommendations", "Items, best first"),
        **schemas.problems(401, 403, 422),
    },
)
async def get_recommendations(
    customer_id: str,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many items")] = 10,
    context: Annotated[
        str,
        Query(
            description="where they show: home, cart or product:{sku}",
            max_length=300,
            pattern=r"^(home|cart|product:.+)$",
        ),
    ] = "home",
    include: Annotated[
        list[str] | None,
        Query(description="only these categories (repeat, or comma separated)", max_length=50),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        Query(description="never these categories (repeat, or comma separated)", max_length=50),
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_K, deprecated=True, description="the old name of k")
    ] = None,
) -> Any:
    """Personalised items: what the customer bought (where the context allows
    repeats) and viewed, items related to the product on screen, the cart and
    recent views, popular items of their favourite categories, then popular
    and trending ones. Never the cart's items, nor the product on screen. A
    customer Pulse knows nothing of gets trending and popular items."""
    try:
        where = parse_context(context)
    except ValueError as exc:
        raise ProblemError(422, "invalid parameter", f"context: {exc}") from None
    request = Request(
        k=limit or k,
        context=where,
        now=time.time(),
        include=_categories(include),
        exclude=_categories(exclude),
    )
    # Round trip 1: the customer and the overall lists.
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(keys.profile(customer_id), [PROFILE_FIELD, ITEMS_FIELD])
    pipe.zrevrange(keys.ranking(POPULAR), 0, LIST_READ - 1, withscores=True)
    pipe.zrevrange(keys.ranking(TRENDING), 0, LIST_READ - 1, withscores=True)
    (view_raw, items_raw), popular, trending = await pipe.execute()
    view = decode_view(view_raw) if view_raw is not None else None
    items = decode_items(items_raw) if items_raw is not None else None
    shopper = shopper_from_view(view, items)
    # Round trip 2: similar items of the anchors, the favourite categories'
    # lists, and how popular the customer's bought items are now.
    wanted = [sku for sku, _ in anchors(shopper, request)]
    categories = [c for c, _ in categories_wanted(shopper, request)]
    bought = list(shopper.items.bought)
    pipe = redis.pipeline(transaction=False)
    if wanted:
        pipe.mget([keys.similar(sku) for sku in wanted])
    for category in categories:
        pipe.zrevrange(keys.ranking(f"{POPULAR}:{category}"), 0, LIST_READ - 1, withscores=True)
    if bought:
        pipe.zmscore(keys.ranking(POPULAR), bought)
    answers = list(await pipe.execute()) if (wanted or categories or bought) else []
    similar = dict(zip(wanted, answers.pop(0), strict=True)) if wanted else {}
    popular_in = {c: _ranked(answers.pop(0)) for c in categories}
    scores = answers.pop(0) if bought else []
    sources = Sources(
        similar={sku: decode_similar(raw) for sku, raw in similar.items() if raw is not None},
        popular=_ranked(popular),
        trending=_ranked(trending),
        popular_in=popular_in,
        item_popularity={s: v for s, v in zip(bought, scores, strict=True) if v is not None},
    )
    ranked = recommend(shopper, request, sources)
    known = view is not None or items is not None
    body = schemas.Recommendations(
        customer_id=customer_id,
        context=context,
        items=[
            schemas.Recommendation(sku=r.sku, score=r.score, reason=r.reason, category=r.category)  # type: ignore[arg-type]
            for r in ranked
        ],
        strategy="personalised" if known else "trending",
    )
    return ingest.json_response(body)


@router.get(
    "/v1/items/{sku}/similar",
    summary="Items related to this one",
    response_model=None,
    responses={
        200: schemas.ok("SimilarItems", "Items, best first"),
        **schemas.problems(401, 403, 422),
    },
)
async def get_similar(
    sku: str,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many items")] = 10,
) -> Any:
    """Items viewed with, bought after viewing, or bought with this one, blended.
    An item with no relations yet gets the popular items of its category, or
    popular items overall: never an error."""
    pipe = redis.pipeline(transaction=False)
    pipe.get(keys.similar(sku))
    pipe.hget(keys.item(sku), "category")
    pipe.zrevrange(keys.ranking(POPULAR), 0, k, withscores=True)
    raw, category, popular = await pipe.execute()
    related = [s for s in decode_similar(raw) if s.sku != sku][:k] if raw is not None else []
    strategy = "related"
    if not related:
        ranked: list[Similar] = []
        if category is not None:
            name = f"{POPULAR}:{category.decode()}"
            ranked = _ranked(await redis.zrevrange(keys.ranking(name), 0, k, withscores=True))
            strategy = "popular in category"
        if not ranked:
            ranked, strategy = _ranked(popular), "popular"
        related = [s for s in ranked if s.sku != sku][:k]
    body = schemas.SimilarItems(
        sku=sku,
        items=[schemas.SimilarItem(sku=s.sku, score=s.score, category=s.category) for s in related],
        strategy=strategy,  # type: ignore[arg-type]
    )
    return ingest.json_response(body)


def _categories(values: list[str] | None) -> frozenset[str]:
    if not values:
        return frozenset()
    return frozenset(p.strip() for text in values for p in text.split(",") if p.strip())


def _ranked(rows: Any) -> list[Similar]:
    """A popularity list as the ranking takes it: scores as shares of the best.
    Scores are logs of decayed weights (engine/popularity.py)."""
    if not rows:
        return []
    best = rows[0][1]
    return [Similar(sku.decode(), _share(score, best)) for sku, score in rows]


def _share(score: float, best: float) -> float:
    return math.exp(score - best) if best > -math.inf else 0.0
