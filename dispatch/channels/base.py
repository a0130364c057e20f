"""The one small protocol every channel implements: ``send(message) -> Outcome``.

A channel knows its transport and nothing of Kafka, Redis or retries: it
makes one attempt and classifies what happened. ``retry`` is a failure worth
another attempt later (a timeout, a 5xx, a 429, an open circuit); ``failed``
is permanent (a 4xx, no address, no endpoint) and goes to the dead-letter
topic at once. The dispatcher owns the attempts, the backoff and the
exactly-once bookkeeping, so every channel gets them alike.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

Status = Literal["sent", "retry", "failed"]


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """What a channel delivers; ``idempotency_key`` is the trigger id, the same
    on every attempt, so a receiver that sees it twice can drop the second."""

    idempotency_key: str
    rule_id: str
    customer_id: str
    channel: str  # the channel the rule chose (email, sms, push, webhook, in_app)
    template: str
    recipient: dict[str, str]
    payload: dict[str, object]
    fired_at: float = 0.0
    priority: int = 0
    category: str = "marketing"


class Outcome(msgspec.Struct, frozen=True):
    status: Status
    detail: str = ""
    # A receiver's own wish (Retry-After) or an open circuit's remaining time.
    retry_after_s: float | None = None


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> Outcome: ...

    def close(self) -> None: ...
