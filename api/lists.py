"""The popularity lists every request shares, read from Redis at most once a second.

The popular and trending lists (overall and per category) are the same for
every customer, and change a little per dataflow batch; reading and parsing
them in each request (``ZREVRANGE ... WITHSCORES``, which redis-py parses
score by score in Python) was a third of a recommendation's CPU. The API keeps
each list it has read, decoded as the ranking takes it, for ``ttl_s``; a
request that finds a list older than that reads it again in the round trip it
makes anyway, so a request still makes one or two round trips.

What one customer did is never cached: the profile, the customer's items and
the similar items of their anchors are read in every request, so a click a
second ago still shows in the next answer.
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis

from engine.recs.relations import Similar
from pulse.keys import RedisKeys

TTL_S = 1.0  # how long a list read serves every request
READ = 101  # items read per list: MAX_K of the similar route, plus the item itself


class SharedLists:
    """Ranked lists by Redis key, as ``Similar`` values with scores as shares of the
    best, each kept ``ttl_s`` after it was read."""

    __slots__ = ("_lists", "ttl_s")

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lists: dict[str, tuple[float, list[Similar]]] = {}

    def get(self, key: str, now: float) -> list[Similar] | None:
        """The list if read less than ``ttl_s`` ago, else None (read it again)."""
        entry = self._lists.get(key)
        if entry is None or now - entry[0] >= self.ttl_s:
            return None
        return entry[1]

    def put(self, key: str, rows: Any, now: float) -> list[Similar]:
        """Keep a ``ZREVRANGE ... WITHSCORES`` answer; returns it as the ranking takes it."""
        ranked = ranked_rows(rows)
        self._lists[key] = (now, ranked)
        return ranked


class Reads:
    """What the recommendation routes read with: the client, the key names and the
    shared lists (one dependency rather than three: FastAPI solves each one in
    every request)."""

    __slots__ = ("keys", "lists", "redis")

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, lists: SharedLists) -> None:
        self.redis = redis
        self.keys = keys
        self.lists = lists


def ranked_rows(rows: Any) -> list[Similar]:
    """A popularity list as the ranking takes it: scores as shares of the best.
    Scores are logs of decayed weights (engine/popularity.py)."""
    if not rows:
        return []
    best = rows[0][1]
    if best == -math.inf:
        return [Similar(sku.decode(), 0.0) for sku, _ in rows]
    exp = math.exp
    return [Similar(sku.decode(), exp(score - best)) for sku, score in rows]
