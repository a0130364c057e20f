"""FastAPI application factory: collector, profiles, recommendations, health."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI

from api.producer import AckProducer
from api.routes import customers, events, health, recommendations
from pulse.keys import RedisKeys
from pulse.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.keys = RedisKeys(settings.redis_prefix)
        app.state.redis = aioredis.Redis.from_url(settings.redis, socket_timeout=2)
        app.state.producer = AckProducer(settings.kafka, settings.ack_timeout_s)
        log.info("api ready: events to %s, profiles from %s", settings.events_topic, settings.redis)
        try:
            yield
        finally:
            app.state.producer.close()
            await app.state.redis.aclose()

    app = FastAPI(
        title="Pulse",
        version="0.1.0",
        summary="Real-time personalization: events in, profiles and recommendations out.",
        lifespan=lifespan,
    )
    for module in (events, customers, recommendations, health):
        app.include_router(module.router)
    _publish_event_schemas(app)
    return app


def _publish_event_schemas(app: FastAPI) -> None:
    """Add the msgspec-generated event schemas to the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                events.EVENT_COMPONENTS
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
