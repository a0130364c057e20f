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

The overall lists hold bare SKUs; their items' categories (for the answer, and
for a request's include and exclude filters) come from one hash the dataflow
keeps (``RedisKeys.item_categories``), read for the SKUs a list brought that
this process has not seen yet, in the request's second round trip.
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis

from engine.recs.relations import Similar
from pulse.keys import RedisKeys

TTL_S = 1.0  # how long a list read serves every request
READ = 50  # items read per list: more than any Policy reads (ranker.Policy)
CATEGORIES_KEPT = 20_000  # SKUs whose category a process remembers (then forgets all)


class _Entry:
    __slots__ = ("items", "length", "read_at", "refreshing_since", "uncategorised")

    def __init__(self, items: list[Similar], length: int, read_at: float) -> None:
        self.items = items
        self.length = length  # how many were asked for (fewer: the list is shorter)
        self.read_at = read_at
        self.refreshing_since = -math.inf
        # Some items may lack a category that the categories hash has: look.
        self.uncategorised = any(s.category is None for s in items)


class SharedLists:
    """Ranked lists by Redis key, as ``Similar`` values with scores as shares of the
    best, each kept ``ttl_s`` after it was read.

    When a list gets stale, the first request to see it reads it again; the
    others keep serving the stale one until that answer is in (for another
    ``ttl_s`` at the most, should that request fail), so a busy process does not
    read and parse the same list once per request in flight.
    """

    __slots__ = ("_categories", "_lists", "ttl_s")

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lists: dict[str, _Entry] = {}
        self._categories: dict[str, str] = {}  # sku -> category ("": none)

    def get(self, key: str, now: float, length: int = READ) -> list[Similar] | None:
        """The list's first ``length`` items or fewer, or None: the caller reads
        ``length`` or more of it and ``put`` s the answer."""
        entry = self._lists.get(key)
        if entry is None or entry.length < length:
            return None
        ttl = self.ttl_s
        if now - entry.read_at >= ttl:
            if now - entry.refreshing_since < ttl:
                return entry.items  # another request is reading it
            entry.refreshing_since = now
            return None
        return entry.items

    def put(self, key: str, rows: Any, now: float, length: int = READ) -> list[Similar]:
        """Keep a ``ZREVRANGE 0 length-1 WITHSCORES`` answer; returns it as the
        ranking takes it."""
        ranked = self._categorised(ranked_rows(rows))
        self._lists[key] = _Entry(ranked, length, now)
        return ranked

    def unknown_categories(self, *keys: str) -> list[str]:
        """SKUs of the lists under ``keys`` whose category this process has not
        read yet (most requests: none, at the cost of a flag per list)."""
        known = self._categories
        out: dict[str, None] = {}
        for key in keys:
            entry = self._lists.get(key)
            if entry is None or not entry.uncategorised:
                continue
            found = [s.sku for s in entry.items if s.category is None and s.sku not in known]
            if found:
                out.update(dict.fromkeys(found))
            else:
                entry.uncategorised = False
        return list(out)

    def learn_categories(self, skus: list[str], values: list[Any], keys: list[str]) -> None:
        """An ``HMGET`` of the categories hash for ``skus``; the lists under
        ``keys`` get them."""
        if len(self._categories) + len(skus) > CATEGORIES_KEPT:
            self._categories.clear()
        for sku, value in zip(skus, values, strict=True):
            self._categories[sku] = value.decode() if value is not None else ""
        for key in keys:
            entry = self._lists.get(key)
            if entry is not None:
                entry.items = self._categorised(entry.items)
                entry.uncategorised = False

    def items(self, key: str) -> list[Similar]:
        """The list kept under ``key`` now (after ``put``), stale or not."""
        entry = self._lists.get(key)
        return entry.items if entry is not None else []

    def _categorised(self, items: list[Similar]) -> list[Similar]:
        known = self._categories
        if not known:
            return items
        return [
            Similar(s.sku, s.score, known.get(s.sku) or None) if s.category is None else s
            for s in items
        ]


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
