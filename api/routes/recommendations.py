"""Recommendations and similar items, ranked in the request from serving views.

The dataflow keeps the views (dataflows/item_sink.py: similar items per item,
popular and trending lists overall and per category; dataflows/redis_sink.py:
the profile and the customer's items); a request reads what it needs in one
or two round trips and ranks in-process with engine/recs/ranker.py, so a
click a second ago shows in the next answer and no model runs in the request
beyond a few hundred additions. The popularity lists, the same for every
customer, are read at most once a second per process (api/lists.py).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api import auth, deps, ingest, schemas
from api.lists import READ, Reads
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

router = APIRouter(tags=["recommendations"], dependencies=[Depends(auth.require_read)])

ITEMS_FIELD = "items"  # the customer's items beside the view (dataflows/redis_sink.py)


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
    reads: Annotated[Reads, Depends(deps.reads)],
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
    redis, keys, lists = reads.redis, reads.keys, reads.lists
    clock = time.monotonic()
    # Round trip 1: the customer, and the overall lists if they are older than
    # a second (api/lists.py).
    profile_key = keys.profile(customer_id)
    popular_key, trending_key = keys.ranking(POPULAR), keys.ranking(TRENDING)
    popular = lists.get(popular_key, clock)
    trending = lists.get(trending_key, clock)
    if popular is None or trending is None:
        pipe = redis.pipeline(transaction=False)
        pipe.hmget(profile_key, [PROFILE_FIELD, ITEMS_FIELD])
        pipe.zrevrange(popular_key, 0, READ - 1, withscores=True)
        pipe.zrevrange(trending_key, 0, READ - 1, withscores=True)
        (view_raw, items_raw), popular_rows, trending_rows = await pipe.execute()
        popular = lists.put(popular_key, popular_rows, clock)
        trending = lists.put(trending_key, trending_rows, clock)
    else:
        view_raw, items_raw = await redis.hmget(profile_key, [PROFILE_FIELD, ITEMS_FIELD])
    view = decode_view(view_raw) if view_raw is not None else None
    items = decode_items(items_raw) if items_raw is not None else None
    shopper = shopper_from_view(view, items)
    # Round trip 2: similar items of the anchors, how popular the customer's
    # bought items are now, and the favourite categories' lists if stale.
    wanted = [sku for sku, _ in anchors(shopper, request)]
    bought = list(shopper.items.bought)
    popular_in: dict[str, list[Similar]] = {}
    stale: list[tuple[str, str]] = []
    for category, _ in categories_wanted(shopper, request):
        key = keys.ranking(f"{POPULAR}:{category}")
        cached = lists.get(key, clock)
        if cached is None:
            stale.append((category, key))
        else:
            popular_in[category] = cached
    # The overall lists' items of unknown category: once per SKU per process.
    uncategorised = lists.unknown_categories(popular_key, trending_key)
    similar_raw: list[Any] = []
    scores: list[float | None] = []
    if stale or uncategorised or (wanted and bought):
        pipe = redis.pipeline(transaction=False)
        if wanted:
            pipe.mget([keys.similar(sku) for sku in wanted])
        for _, key in stale:
            pipe.zrevrange(key, 0, READ - 1, withscores=True)
        if bought:
            pipe.zmscore(popular_key, bought)
        if uncategorised:
            pipe.hmget(keys.item_categories(), uncategorised)
        answers = list(await pipe.execute())
        similar_raw = answers.pop(0) if wanted else []
        for category, key in stale:
            popular_in[category] = lists.put(key, answers.pop(0), clock)
        scores = answers.pop(0) if bought else []
        if uncategorised:
            lists.learn_categories(uncategorised, answers.pop(0), [popular_key, trending_key])
            popular, trending = lists.items(popular_key), lists.items(trending_key)
    elif wanted:
        similar_raw = await redis.mget([keys.similar(sku) for sku in wanted])
    elif bought:
        scores = await redis.zmscore(popular_key, bought)
    sources = Sources(
        similar={
            sku: decode_similar(raw)
            for sku, raw in zip(wanted, similar_raw, strict=True)
            if raw is not None
        },
        popular=popular,
        trending=trending,
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
    reads: Annotated[Reads, Depends(deps.reads)],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many items")] = 10,
) -> Any:
    """Items viewed with, bought after viewing, or bought with this one, blended.
    An item with no relations yet gets the popular items of its category, or
    popular items overall: never an error."""
    redis, keys, lists = reads.redis, reads.keys, reads.lists
    clock = time.monotonic()
    length = max(READ, k + 1)  # k besides the item itself
    popular_key = keys.ranking(POPULAR)
    popular = lists.get(popular_key, clock, length)
    pipe = redis.pipeline(transaction=False)
    pipe.get(keys.similar(sku))
    pipe.hget(keys.item(sku), "category")
    if popular is None:
        pipe.zrevrange(popular_key, 0, length - 1, withscores=True)
        raw, category, popular_rows = await pipe.execute()
        popular = lists.put(popular_key, popular_rows, clock, length)
    else:
        raw, category = await pipe.execute()
    related = [s for s in decode_similar(raw) if s.sku != sku][:k] if raw is not None else []
    strategy = "related"
    if not related:
        ranked: list[Similar] | None = None
        if category is not None:
            key = keys.ranking(f"{POPULAR}:{category.decode()}")
            ranked = lists.get(key, clock, length)
            if ranked is None:
                rows = await redis.zrevrange(key, 0, length - 1, withscores=True)
                ranked = lists.put(key, rows, clock, length)
            strategy = "popular in category"
        if not ranked:
            ranked, strategy = popular, "popular"
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
