"""Prometheus metrics of this API process (api/metrics.py), open like the health checks."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.metrics import ApiMetrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    description=(
        "Prometheus' text format: `pulse_api_request_seconds`, a latency histogram per "
        "route template, method and status class (0.25 ms to 1 s), and the process's "
        "CPU, memory and garbage collection. Open to everyone, like `/healthz`: "
        "scrape it from inside the network."
    ),
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    registry: ApiMetrics = request.app.state.metrics
    body, content_type = registry.exposition(request.headers.get("accept", ""))
    return Response(body, media_type=content_type)
