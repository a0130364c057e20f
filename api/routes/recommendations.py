"""Recommendations served from Redis: a read or two, no model in the request path."""

from __future__ import annotations

from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Query

from api import auth, deps, ingest, schemas
from api.routes.customers import PROFILE_FIELD
from engine.profile import decode_view
from pulse.keys import RedisKeys

router = APIRouter(tags=["recommendations"], dependencies=[Depends(auth.require_read)])

_CANDIDATES = 100


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
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Any:
    """Popular items with time decay, minus what is in the cart, the customer's
    favourite categories first. Unknown customers get plain popularity."""
    pipe = redis.pipeline(transaction=False)
    pipe.hget(keys.profile(customer_id), PROFILE_FIELD)
    pipe.zrevrange(keys.popular(), 0, _CANDIDATES - 1)
    view_raw, candidates = await pipe.execute()
    view = decode_view(view_raw) if view_raw is not None else None
    in_cart = {line.sku for line in view.cart} if view is not None else set()
    affinity: dict[str, int] = view.category_views if view is not None else {}

    skus = [sku for sku in (s.decode() for s in candidates) if sku not in in_cart]
    pipe = redis.pipeline(transaction=False)
    for sku in skus:
        pipe.hgetall(keys.item(sku))
    details = await pipe.execute()
    ranked = []
    for rank, (sku, raw) in enumerate(zip(skus, details, strict=True)):
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        category = fields.get("category")
        item = schemas.Recommendation(
            sku=sku,
            name=fields.get("name"),
            category=category,
            price=float(fields["price"]) if "price" in fields else None,
            reason="favourite category" if category in affinity else "popular",
        )
        ranked.append(((-affinity.get(category or "", 0), rank), item))
    ranked.sort(key=lambda pair: pair[0])
    # Encoded by msgspec from the documented Structs, not walked by FastAPI's
    # jsonable_encoder.
    body = schemas.Recommendations(
        customer_id=customer_id, items=[item for _, item in ranked[:limit]], strategy="popularity"
    )
    return ingest.json_response(body)
