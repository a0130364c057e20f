"""The console's clients, made once per API process (like api/deps.py's)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis
from fastapi import FastAPI
from fastapi.templating import Jinja2Templates

from api.console import history
from api.console.customers import InProcess, TopicTail
from api.console.pipeline import PipelineReader
from api.console.rules import LiveRules
from api.console.session import Sessions
from pulse.keys import RedisKeys
from pulse.settings import Settings

HERE = Path(__file__).parent


@dataclass
class Console:
    settings: Settings
    sessions: Sessions
    templates: Jinja2Templates
    pipeline: PipelineReader
    rules: LiveRules
    tail: TopicTail
    keys: RedisKeys
    sync_redis: redis.Redis
    api: InProcess | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def take_sample(self) -> bool:
        """One history sample (api/console/history.py), from a fresh reading."""
        reading = self.pipeline.read()
        return history.record(self.sync_redis, self.keys, reading.sample())


def make(settings: Settings, sessions: Sessions) -> Console:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["ago"] = _ago
    templates.env.filters["utc"] = _utc
    # A customer id in a URL path: every reserved character escaped, "/" too.
    templates.env.filters["segment"] = lambda value: quote(str(value), safe="")
    rules = LiveRules(settings)
    return Console(
        settings=settings,
        sessions=sessions,
        templates=templates,
        pipeline=PipelineReader(settings, rules.rule_ids),
        rules=rules,
        tail=TopicTail(settings),
        keys=RedisKeys(settings.redis_prefix),
        sync_redis=redis.Redis.from_url(settings.redis, socket_timeout=2),
    )


async def start(app: FastAPI, console: Console, *, sample: bool = True) -> None:
    console.api = InProcess(app, console.settings)
    if sample:
        console.tasks.append(asyncio.create_task(history.sample_forever(console.take_sample)))


async def stop(console: Console) -> None:
    for task in console.tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if console.api is not None:
        await console.api.aclose()
    await asyncio.to_thread(_close, console)


def _close(console: Console) -> None:
    console.pipeline.close()
    console.rules.close()
    console.tail.close()
    console.sync_redis.close()


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = time.time() - float(ts)
    if seconds < 0:
        return f"in {-seconds:.0f} s"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _utc(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ts)))
