"""The log channel: every delivery as one JSON line on standard output."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

import orjson

from dispatch.channels.base import Message, Outcome


class LogChannel:
    """Writes each delivery as one JSON line, whatever channel the rule chose:
    for development, the demo's console and tests that read what was sent."""

    name = "log"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()  # one line at a time from the dispatcher's threads

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
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
        return Outcome("sent")

    def close(self) -> None:
        pass
