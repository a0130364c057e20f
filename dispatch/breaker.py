"""A circuit breaker per endpoint: stop hammering a receiver that is down.

After ``failures`` retriable failures in a row the circuit opens: sends to that
endpoint are not attempted for ``reset_s`` and come back as ``retry`` with the
time left, so the dispatcher spends its attempts on endpoints that answer.
Then one trial send is let through (half-open): success closes the circuit,
failure opens it for another ``reset_s``. Only retriable failures count: a
400 says the endpoint is up and refuses this one message.

Many threads send through one breaker. A send asks ``wait_s()`` and then
``record()``s its result on the same thread, so the breaker knows which
thread holds the half-open trial: a send that was already under way when the
circuit opened, answering late, neither ends the trial nor lets a second one
through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 5,
        reset_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("failures must be at least 1 and reset_s positive")
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._in_a_row = 0
        self._open_until: float | None = None
        self._trial: int | None = None  # the thread sending the half-open trial
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._open_until is None:
                return "closed"
            return "open" if self._clock() < self._open_until else "half-open"

    def wait_s(self) -> float:
        """0 when a send may go now (closed, or the one half-open trial);
        otherwise how long until the circuit lets a trial through."""
        with self._lock:
            if self._open_until is None:
                return 0.0
            left = self._open_until - self._clock()
            if left > 0:
                return left
            if self._trial is not None:
                return self.reset_s  # one trial at a time
            self._trial = threading.get_ident()
            return 0.0

    def record(self, ok: bool) -> None:
        """The result of a send that was let through; ``ok`` False only for
        retriable failures."""
        with self._lock:
            if self._trial == threading.get_ident():
                self._trial = None
            if ok:
                self._in_a_row, self._open_until = 0, None
                return
            self._in_a_row += 1
            if self._open_until is not None or self._in_a_row >= self.failures:
                self._open_until = self._clock() + self.reset_s
