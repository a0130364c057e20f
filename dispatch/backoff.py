"""Exponential backoff with full jitter between delivery attempts.

The delay before attempt ``n + 1`` is uniform in ``[0, min(cap, base * 2**n))``
("full jitter"): many dispatchers retrying one recovered endpoint spread
their attempts instead of arriving together. A receiver's Retry-After is a
lower bound on top of it.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self, base_s: float = 0.2, cap_s: float = 30.0, rng: random.Random | None = None
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("base_s must be positive and cap_s at least base_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()

    def delay(self, failures: int, at_least: float | None = None) -> float:
        """Seconds to wait after ``failures`` (>= 1) failed attempts."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(failures - 1, 62))
        wait = self._rng.uniform(0.0, ceiling)
        if at_least is not None:
            wait = max(wait, min(at_least, self.cap_s))
        return wait
