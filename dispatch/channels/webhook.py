"""Webhooks signed per the Standard Webhooks specification (standardwebhooks.com).

Each POST carries ``webhook-id`` (the trigger id: the same on every attempt,
so the receiver can deduplicate), ``webhook-timestamp`` and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of id.timestamp.body>`` with
the endpoint's own secret), made by the specification's reference library,
so any receiver verifies them with its ecosystem's library. The body is the
specification's envelope: ``{"type", "timestamp", "data"}``.

Classification: 2xx sent; 408, 425, 429, 5xx, timeouts and connection errors
are retriable (Retry-After honoured); any other status is permanent. A circuit
breaker per endpoint stops attempts to a receiver that keeps failing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping

import httpx
import orjson
from standardwebhooks import Webhook

from dispatch.breaker import CircuitBreaker
from dispatch.channels.base import Message, Outcome
from dispatch.channels.http_outcome import send_through
from pulse.settings import WebhookEndpoint

EVENT_TYPE = "pulse.trigger"


class WebhookChannel:
    """Routes a message to the endpoint named like its template, else ``default``."""

    name = "webhook"

    def __init__(
        self,
        endpoints: Mapping[str, WebhookEndpoint],
        breaker_failures: int = 5,
        breaker_reset_s: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.endpoints = dict(endpoints)
        self._signers = {name: Webhook(e.secret) for name, e in self.endpoints.items()}
        self._breakers = {
            name: CircuitBreaker(breaker_failures, breaker_reset_s) for name in self.endpoints
        }
        # One client for all the dispatcher's threads (httpx.Client is
        # thread-safe), with a connection for each of them (dispatch_concurrency
        # is at most 100): a send never waits for another's connection.
        self._client = client or httpx.Client(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
            follow_redirects=False,
        )

    def endpoint_for(self, message: Message) -> str | None:
        if message.template in self.endpoints:
            return message.template
        return "default" if "default" in self.endpoints else None

    def breaker(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def send(self, message: Message) -> Outcome:
        name = self.endpoint_for(message)
        if name is None:
            return Outcome(
                "failed",
                f"no webhook endpoint named {message.template!r} and no default "
                "(settings webhook_url and webhook_secret, or webhook_endpoints)",
            )
        endpoint, breaker = self.endpoints[name], self._breakers[name]
        wait = breaker.wait_s()
        if wait > 0:
            return Outcome("retry", f"circuit open for endpoint {name}", retry_after_s=wait)
        now = time.time()
        body = orjson.dumps(
            {
                "type": EVENT_TYPE,
                "timestamp": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
                "data": {
                    "trigger_id": message.idempotency_key,
                    "rule_id": message.rule_id,
                    "customer_id": message.customer_id,
                    "template": message.template,
                    "category": message.category,
                    "priority": message.priority,
                    "fired_at": message.fired_at,
                    "recipient": message.recipient,
                    "payload": message.payload,
                },
            }
        )
        stamp = dt.datetime.fromtimestamp(int(now), dt.UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": message.idempotency_key,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": self._signers[name].sign(
                message.idempotency_key, stamp, body.decode()
            ),
            "idempotency-key": message.idempotency_key,
            "user-agent": "pulse-dispatch",
        }
        return send_through(
            name,
            breaker,
            endpoint.timeout_s,
            lambda: self._client.post(
                endpoint.url, content=body, headers=headers, timeout=endpoint.timeout_s
            ),
        )

    def close(self) -> None:
        self._client.close()
