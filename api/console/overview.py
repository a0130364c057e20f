"""Overview and charts: is the stream healthy, what did the rules do lately.

The overview page polls its live part every 2 s (htmx), under the issue's
limit of one request per second per page; every page that polls within the
same second shares one reading (api/console/pipeline.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.console import history
from api.console.lift import lift_of
from api.console.pipeline import Reading
from api.console.state import Console
from api.console.web import Con, Seen, render

router = APIRouter()

POLL_S = 2


def _overview(console: Console) -> dict[str, Any]:
    reading = console.pipeline.read()
    samples = history.samples(console.sync_redis, console.keys, time.time() - history.KEEP_S)
    hour = history.last_hour(reading.rule_stats, samples)
    rates = reading.rates or _rates_from(samples)
    return {
        "r": reading,
        "rates": rates,
        "hour": hour,
        "series": history.series(samples),
        "poll_s": POLL_S,
    }


def _rates_from(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Before the second look of this process: the last sampled interval."""
    if len(samples) < 2:
        return {}
    s = history.series(samples[-2:])
    return {"events_in": s["in"][-1], "processed": s["processed"][-1]} if s["t"] else {}


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, console: Con, viewer: Seen) -> HTMLResponse:
    data = await asyncio.to_thread(_overview, console)
    return render(request, console, "overview.html", viewer, **data)


@router.get("/overview/live", response_class=HTMLResponse)
async def overview_live(request: Request, console: Con, viewer: Seen) -> HTMLResponse:
    data = await asyncio.to_thread(_overview, console)
    return render(request, console, "_overview_live.html", viewer, **data)


def _charts(console: Console) -> dict[str, Any]:
    reading: Reading = console.pipeline.read()
    samples = history.samples(console.sync_redis, console.keys, time.time() - history.KEEP_S)
    lifts = [(rule_id, lift_of(counts)) for rule_id, counts in reading.rule_stats.items()]
    return {
        "series_json": orjson.dumps(history.series(samples)).decode(),
        "lifts": lifts,
        "samples": len(samples),
    }


@router.get("/charts", response_class=HTMLResponse)
async def charts(request: Request, console: Con, viewer: Seen) -> HTMLResponse:
    data = await asyncio.to_thread(_charts, console)
    return render(request, console, "charts.html", viewer, **data)
