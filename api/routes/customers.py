"""Customer profiles, read from the Redis serving view."""

from __future__ import annotations

from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends

from api import auth, deps, schemas
from api.problems import problem
from engine.profile import parse_view
from pulse.keys import RedisKeys

# The hash field holding the MessagePack profile view (dataflows/redis_sink.py).
PROFILE_FIELD = "view"

router = APIRouter(tags=["customers"], dependencies=[Depends(auth.require_read)])


@router.get(
    "/v1/customers/{customer_id}/profile",
    summary="A customer's unified profile",
    response_model=None,
    responses={
        200: schemas.ok("ProfileView", "The profile; empty and zero fields are left out"),
        **schemas.problems(401, 403, 404, 422),
    },
)
async def get_profile(
    customer_id: str,
    redis: Annotated[aioredis.Redis, Depends(deps.redis_client)],
    keys: Annotated[RedisKeys, Depends(deps.keys)],
) -> Any:
    raw = await redis.hget(keys.profile(customer_id), PROFILE_FIELD)
    if not isinstance(raw, bytes):  # None: no profile (the client does not decode)
        return problem(404, "no such customer", f"no profile for {customer_id!r}")
    return parse_view(raw)
