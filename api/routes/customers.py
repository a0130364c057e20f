"""Customer profiles, read from the Redis serving view."""

from __future__ import annotations

from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends

from api import deps
from api.problems import problem
from engine.profile import parse_view
from pulse.keys import RedisKeys

router = APIRouter(tags=["customers"])


@router.get(
    "/v1/customers/{customer_id}/profile",
    summary="A customer's unified profile",
    responses={404: {"description": "No profile for this customer"}},
)
async def get_profile(
    customer_id: str,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
) -> Any:
    raw: dict[Any, Any] = await redis.hgetall(keys.profile(customer_id))
    if not raw:
        return problem(404, "no such customer", f"no profile for {customer_id!r}")
    return parse_view({k.decode(): v.decode() for k, v in raw.items()})
