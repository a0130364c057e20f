"""Delivery channels: one small protocol, ``send(message) -> Outcome``."""

from __future__ import annotations

import logging
import sys
from typing import Literal, Protocol, TextIO

import msgspec
import orjson

log = logging.getLogger(__name__)


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """What a channel delivers; ``idempotency_key`` is the trigger id."""

    idempotency_key: str
    rule_id: str
    customer_id: str
    channel: str  # the channel the rule chose (email, sms, push, webhook, in_app)
    template: str
    recipient: dict[str, str]
    payload: dict[str, object]


class Outcome(msgspec.Struct, frozen=True):
    status: Literal["sent", "failed"]
    detail: str = ""


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> Outcome: ...


class LogChannel:
    """Writes each delivery as one JSON line, whatever channel the rule chose:
    the demo's and tests' endpoint until real channels exist."""

    name = "log"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def send(self, message: Message) -> Outcome:
        line = orjson.dumps(
            {
                "delivered": message.idempotency_key,
                "rule_id": message.rule_id,
                "customer_id": message.customer_id,
                "channel": message.channel,
                "template": message.template,
                "recipient": message.recipient,
                "payload": message.payload,
            }
        ).decode()
        self._stream.write(line + "\n")
        self._stream.flush()
        return Outcome("sent")


def channel_for(name: str) -> Channel:
    if name == "log":
        return LogChannel()
    raise ValueError(f"unknown channel {name!r}")
