"""FastAPI application factory: collector (Pulse and Segment formats), profiles,
recommendations, next-best-action, health and metrics; API keys; problem+json errors; the OpenAPI
document; the web console under /console (api/console/)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI

from api import console, problems, schemas
from api.auth import KeyRing
from api.ingest import Collector
from api.lists import Reads, SharedLists
from api.metrics import ApiMetrics, RequestTimer
from api.producer import AckProducer
from api.rejections import Rejections
from api.routes import (
    customers,
    events,
    health,
    links,
    metrics,
    next_action,
    recommendations,
    rules,
    segment,
)
from api.scores import ScoreCache
from pulse.keys import RedisKeys
from pulse.rules_files import RulesFileError, load_action_book, load_rfm
from pulse.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.keys = RedisKeys(settings.redis_prefix)
        app.state.redis = aioredis.Redis.from_url(settings.redis, socket_timeout=2)
        app.state.reads = Reads(app.state.redis, app.state.keys, SharedLists())
        app.state.producer = AckProducer(settings.kafka, settings.ack_timeout_s)
        app.state.collector = Collector(settings, app.state.producer)
        app.state.rejections = Rejections(settings, app.state.producer, app.state.metrics.registry)
        app.state.rfm_bands = rfm_bands
        app.state.scores = ScoreCache(settings.score_settings()) if settings.scores else None
        app.state.nba_control = nba_control
        if keyring.open:
            log.warning("no write_keys or read_keys: the API is open to anyone (development mode)")
        await console.start(app, app.state.console)
        log.info("api ready: events to %s, profiles from %s", settings.events_topic, settings.redis)
        try:
            yield
        finally:
            await console.stop(app.state.console)
            app.state.producer.close()
            await app.state.redis.aclose()

    keyring = KeyRing(settings.write_keys, settings.read_keys, settings.admin_keys)
    rfm_bands = load_rfm(settings.rules_dir)  # fails at start-up, not per request
    nba_control = _control_action(settings)
    app = FastAPI(
        title="Pulse",
        version="0.1.0",
        summary="Real-time personalization: events in, profiles and recommendations out.",
        lifespan=lifespan,
    )
    app.state.keyring = keyring
    app.state.metrics = ApiMetrics()
    problems.install(app)
    for module in (events, segment, customers, recommendations, rules, links, health, metrics):
        app.include_router(module.router)
    app.include_router(next_action.read_router)
    app.include_router(next_action.reward_router)
    console.install(app, settings, keyring)
    # Times every request, 404s and errors included (api/metrics.py).
    app.add_middleware(RequestTimer, metrics=app.state.metrics)
    _publish_schemas(app, documented_auth=not keyring.open)
    return app


def _control_action(settings: Settings) -> str:
    """What next-action answers without a live decision: actions.yaml's control
    (``nothing`` without the file). An invalid file stops the start, as it
    stops the dataflow's."""
    loaded = load_action_book(settings.rules_dir)
    if loaded is None:
        return "nothing"
    if loaded.book is None:
        problems = "\n".join(f"  {p}" for p in loaded.problems)
        raise RulesFileError(f"actions.yaml in {settings.rules_dir} has problems:\n{problems}")
    return loaded.book.control


def _publish_schemas(app: FastAPI, *, documented_auth: bool) -> None:
    """Add the msgspec-generated schemas to the OpenAPI components.

    Without keys (development mode) nothing needs authentication, and the
    document says so: the security requirements are left out.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(schemas.COMPONENTS)
            if not documented_auth:
                components.pop("securitySchemes", None)
                for operations in schema.get("paths", {}).values():
                    for operation in operations.values():
                        operation.pop("security", None)
                        operation.get("responses", {}).pop("401", None)
                        operation.get("responses", {}).pop("403", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
