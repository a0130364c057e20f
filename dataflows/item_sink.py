"""Item popularity: the per-item state step, and its Redis writes (a sorted set
of scores plus an item hash)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.redis_batch import Command, write_all
from engine.popularity import ItemSignal, ItemState, apply_signal
from pulse.keys import RedisKeys


class ItemLogic(StatefulBatchLogic[list[ItemSignal], ItemState, ItemState]):
    """One item's popularity; its signals (grouped per batch upstream) are applied
    one by one, in order (the score is a float: the same additions in the same
    order give the same bits after a crash), and answered with the new state."""

    def __init__(self, snapshot: ItemState | None) -> None:
        self._state = snapshot

    def on_batch(self, values: list[list[ItemSignal]]) -> tuple[Iterable[ItemState], bool]:
        state = self._state
        for signals in values:
            for signal in signals:
                state = apply_signal(state, signal)
        self._state = state
        return ([] if state is None else [state]), StatefulBatchLogic.RETAIN

    def snapshot(self) -> ItemState:
        assert self._state is not None  # a key exists once a signal came
        return self._state


class _ItemPartition(StatelessSinkPartition[tuple[str, ItemState]]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys
        self._written: dict[str, tuple[str | None, str | None, float | None]] = {}

    def write_batch(self, items: list[tuple[str, ItemState]]) -> None:
        latest = dict(items)
        commands: list[Command] = [
            (
                "ZADD",
                self._keys.popular(),
                *(x for sku, item in latest.items() for x in (item.log_score, sku)),
            )
        ]
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
            fields: list[Any] = ["sku", sku]
            if item.name:
                fields += ["name", item.name]
            if item.category:
                fields += ["category", item.category]
            if item.price is not None:
                fields += ["price", repr(item.price)]
            commands.append(("HSET", self._keys.item(sku), *fields))
        write_all(self._client, commands)

    def close(self) -> None:
        self._client.close()


class RedisItemSink(DynamicSink[tuple[str, ItemState]]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._keys = keys

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ItemPartition:
        return _ItemPartition(self._url, self._keys)
