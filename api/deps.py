"""Clients created once at start-up and injected into routes.

Every dependency is ``async def``, though none awaits anything: FastAPI runs a
plain ``def`` dependency in its thread pool, a hand-over to a worker thread
and back for each one on each request. With these as plain functions a third
of the collector's time went to that hand-over (py-spy, benchmarks/api.py).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from fastapi import Request

from api.ingest import Collector
from api.lists import Reads
from api.producer import AckProducer
from api.rejections import Rejections
from api.scores import ScoreCache
from engine.rfm import RfmBands
from pulse.keys import RedisKeys
from pulse.settings import Settings


async def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


async def redis_client(request: Request) -> aioredis.Redis:
    value: aioredis.Redis = request.app.state.redis
    return value


async def producer(request: Request) -> AckProducer:
    value: AckProducer = request.app.state.producer
    return value


async def keys(request: Request) -> RedisKeys:
    value: RedisKeys = request.app.state.keys
    return value


async def collector(request: Request) -> Collector:
    value: Collector = request.app.state.collector
    return value


async def rfm_bands(request: Request) -> RfmBands:
    value: RfmBands = request.app.state.rfm_bands
    return value


async def score_cache(request: Request) -> ScoreCache | None:
    """The published score models, decoded (None: scores are off)."""
    value: ScoreCache | None = request.app.state.scores
    return value


async def rejections(request: Request) -> Rejections:
    value: Rejections = request.app.state.rejections
    return value


async def reads(request: Request) -> Reads:
    """The recommendation routes' client, key names and shared lists, in one."""
    value: Reads = request.app.state.reads
    return value
