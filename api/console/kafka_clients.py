"""The console's Kafka consumers: made on first use, closed only when free.

The console's readers (pipeline figures, the live rule set, a customer's
timeline) each keep one consumer for metadata and short reads, behind a lock
that serialises their reads. Shutting the API down must not wait on a read
that is stuck on an unreachable broker (its calls time out on their own, and
the process is ending anyway), nor close a consumer under it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer


def close_when_free(lock: threading.Lock, close: Callable[[], None], wait_s: float) -> None:
    """``close()`` under ``lock``, unless a read still holds it after ``wait_s``."""
    if not lock.acquire(timeout=wait_s):
        return
    try:
        close()
    finally:
        lock.release()


class LazyConsumer:
    """One consumer, made on first ``get()`` (under ``lock``, held by the caller)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self._config = config
        self._consumer: Consumer | None = None

    def get(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        return self._consumer

    def close(self, wait_s: float = 0.5) -> None:
        close_when_free(self.lock, self._close, wait_s)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
