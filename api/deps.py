"""Clients created once at start-up and injected into routes."""

from __future__ import annotations

import redis.asyncio as aioredis
from fastapi import Request

from api.ingest import Collector
from api.producer import AckProducer
from engine.rfm import RfmBands
from pulse.keys import RedisKeys
from pulse.settings import Settings


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def redis_client(request: Request) -> aioredis.Redis:
    value: aioredis.Redis = request.app.state.redis
    return value


def producer(request: Request) -> AckProducer:
    value: AckProducer = request.app.state.producer
    return value


def keys(request: Request) -> RedisKeys:
    value: RedisKeys = request.app.state.keys
    return value


def collector(request: Request) -> Collector:
    value: Collector = request.app.state.collector
    return value


def rfm_bands(request: Request) -> RfmBands:
    value: RfmBands = request.app.state.rfm_bands
    return value
