"""How an HTTP provider's answer classifies: shared by the webhook, SMS, push
and other HTTP channels so they agree on what is worth another attempt."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

import httpx

from dispatch.breaker import CircuitBreaker
from dispatch.channels.base import Outcome

_RETRIABLE = frozenset({408, 425, 429})


def classify(name: str, response: httpx.Response) -> Outcome:
    """2xx sent; 408, 425, 429 and 5xx retriable (Retry-After honoured); any
    other status permanent."""
    status = response.status_code
    if 200 <= status < 300:
        return Outcome("sent", f"{name}: HTTP {status}")
    text = response.text.strip().replace("\n", " ")[:200]
    detail = f"{name}: HTTP {status} {text}".rstrip()
    if status in _RETRIABLE or status >= 500:
        return Outcome("retry", detail, retry_after_s=retry_after(response, time.time()))
    return Outcome("failed", detail)


def attempt(
    name: str,
    breaker: CircuitBreaker,
    timeout_s: float,
    send: Callable[[], httpx.Response],
    answer: Callable[[str, httpx.Response], Outcome] = classify,
) -> Outcome:
    """One request to a provider behind its circuit breaker. An open circuit,
    a timeout or a connection error is worth another attempt; an answer is
    classified by ``answer``. Only retriable outcomes count against the
    provider: a 400 says it is up and refuses this one message."""
    wait = breaker.wait_s()
    if wait > 0:
        return Outcome("retry", f"{name}: circuit open for the provider", retry_after_s=wait)
    return send_through(name, breaker, timeout_s, send, answer)


def send_through(
    name: str,
    breaker: CircuitBreaker,
    timeout_s: float,
    send: Callable[[], httpx.Response],
    answer: Callable[[str, httpx.Response], Outcome] = classify,
) -> Outcome:
    """The request of ``attempt`` once the breaker has let it through."""
    try:
        response = send()
    except httpx.TimeoutException:
        breaker.record(False)
        return Outcome("retry", f"{name}: no answer within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        breaker.record(False)
        return Outcome("retry", f"{name}: {type(exc).__name__}: {exc}")
    outcome = answer(name, response)
    breaker.record(outcome.status != "retry")
    return outcome


def retry_after(response: httpx.Response, now: float) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
