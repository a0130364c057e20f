"""Liveness and readiness for load balancers and `pulse services status`."""

from __future__ import annotations

from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends

from api import deps, schemas
from api.problems import problem

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Redis answers",
    responses={
        503: {
            "description": "Redis does not answer",
            "content": {"application/problem+json": {"schema": schemas.ref("Problem")}},
        }
    },
)
async def readyz(redis: Annotated[aioredis.Redis, Depends(deps.redis_client)]) -> Any:
    try:
        await redis.ping()
    except Exception as exc:  # any failure means not ready
        return problem(503, "not ready", f"redis: {exc}")
    return {"status": "ready"}
