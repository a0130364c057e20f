"""How an HTTP provider's answer classifies: shared by the webhook, SMS and
other HTTP channels so they agree on what is worth another attempt."""

from __future__ import annotations

import email.utils
import time

import httpx

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
