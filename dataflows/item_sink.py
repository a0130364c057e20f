"""Writes item popularity to Redis: a sorted set of scores plus an item hash."""

from __future__ import annotations

from typing import Any

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from engine.popularity import ItemState
from pulse.keys import RedisKeys


class _ItemPartition(StatelessSinkPartition[ItemState]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys
        self._written: dict[str, tuple[str | None, str | None, float | None]] = {}

    def write_batch(self, items: list[ItemState]) -> None:
        latest = {item.sku: item for item in items}
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(self._keys.popular(), {sku: item.log_score for sku, item in latest.items()})
        for sku, item in latest.items():
            # Item details rarely change: skip rewriting what this worker wrote
            # last (after a restart the cache is empty and everything is
            # rewritten, which is harmless: the values are absolute).
            details = (item.name, item.category, item.price)
            if self._written.get(sku) == details:
                continue
            if len(self._written) > 200_000:
                self._written.clear()
            self._written[sku] = details
            fields: dict[Any, Any] = {"sku": sku}
            if item.name:
                fields["name"] = item.name
            if item.category:
                fields["category"] = item.category
            if item.price is not None:
                fields["price"] = repr(item.price)
            pipe.hset(self._keys.item(sku), mapping=fields)
        pipe.execute()

    def close(self) -> None:
        self._client.close()


class RedisItemSink(DynamicSink[ItemState]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._keys = keys

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ItemPartition:
        return _ItemPartition(self._url, self._keys)
