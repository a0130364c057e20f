"""The API's Prometheus metrics: a latency histogram per route, served at ``/metrics``.

The timer is a pure ASGI middleware rather than Starlette's
``BaseHTTPMiddleware``, which runs every request through an extra task and
memory streams (tens of microseconds); this one adds a closure, two clock
reads and one histogram observation, a few microseconds a request
(``benchmarks/api.py`` measures it). Requests are labelled by the route's
template (``/v1/customers/{customer_id}/profile``), never the raw path, so a
million customers make one series, not a million; by method; and by status
class (``2xx``..``5xx``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Seconds, 0.25 ms to 1 s: reads answer in about a millisecond, so the low
# buckets are fine enough to tell 0.5 ms from 2 ms; the collector waits for
# Kafka's acknowledgement (milliseconds); beyond a second is an outage.
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

# Methods outside this set are counted as "other": the label's values stay
# bounded whatever a client sends.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (404s)


class ApiMetrics:
    """One API process's metrics, in a registry of its own (several apps in one
    process, as in the tests, do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # CPU, memory and GC of the process: what a latency change needs next to it.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.request_seconds = Histogram(
            "pulse_api_request_seconds",
            "Time from a request reaching the app to its response sent, by route "
            "template, method and status class",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The registry and its content type, in the format the scraper asks for
        (``Accept``): OpenMetrics, or Prometheus' text format by default, as
        prometheus-client's own exporter answers (the dispatcher's)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class RequestTimer:
    """Pure ASGI middleware: times each HTTP request into ``ApiMetrics.request_seconds``.

    The route is read from the scope after the app has answered: the router
    writes the matched route into the very scope dict it was given. The
    labelled child of the histogram is kept per (route, method, status), so
    a request costs a dict look-up rather than ``labels()``' locking and
    validation.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self._histogram = metrics.request_seconds
        self._children: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template: str = getattr(route, "path", None) or UNMATCHED
            method = scope["method"]
            if method not in _METHODS:
                method = "other"
            key = (template, method, status // 100)
            child = self._children.get(key)
            if child is None:
                child = self._histogram.labels(template, method, f"{status // 100}xx")
                self._children[key] = child
            child.observe(elapsed)
