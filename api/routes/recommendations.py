"""Recommendations served from Redis: a read or two, no model in the request path."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Query

from api import deps
from pulse.keys import RedisKeys

router = APIRouter(tags=["recommendations"])

_CANDIDATES = 100


@router.get(
    "/v1/customers/{customer_id}/recommendations",
    summary="Items to show this customer",
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
    pipe.hmget(keys.profile(customer_id), ["cart", "category_views"])
    pipe.zrevrange(keys.popular(), 0, _CANDIDATES - 1)
    (cart_raw, categories_raw), candidates = await pipe.execute()
    in_cart = {line["sku"] for line in orjson.loads(cart_raw)} if cart_raw else set()
    affinity: dict[str, int] = orjson.loads(categories_raw) if categories_raw else {}

    skus = [s.decode() for s in candidates if s.decode() not in in_cart]
    pipe = redis.pipeline(transaction=False)
    for sku in skus:
        pipe.hgetall(keys.item(sku))
    details = await pipe.execute()
    items = []
    for rank, (sku, raw) in enumerate(zip(skus, details, strict=True)):
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        category = fields.get("category")
        items.append(
            {
                "sku": sku,
                "name": fields.get("name"),
                "category": category,
                "price": float(fields["price"]) if "price" in fields else None,
                "reason": "favourite category" if category in affinity else "popular",
                "_order": (-affinity.get(category or "", 0), rank),
            }
        )
    items.sort(key=lambda item: item.pop("_order"))
    return {"customer_id": customer_id, "items": items[:limit], "strategy": "popularity"}
