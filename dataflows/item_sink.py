"""Items: the per-item state step, and its Redis writes.

Per item: its popularity (the ``popular`` sorted set and the item hash, as
before the recommender), its popular and trending scores overall and in its
category (``rank:*`` sorted sets, engine/recs/trending.py) and its similar
items (one MessagePack value, engine/recs/relations.py). Every value written
is absolute, so a replay after a crash overwrites rather than adds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import msgspec
import redis
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.redis_batch import Command, write_all
from engine.popularity import ItemSignal, ItemState, apply_signal
from engine.recs.config import DEFAULT_CONFIG
from engine.recs.relations import (
    ItemRelations,
    PairSignal,
    Similar,
    apply_pair,
    encode_similar,
    similar_items,
)
from engine.recs.trending import TRENDING, ItemTrend, apply_trend, list_names
from pulse.keys import RedisKeys


class ItemRecord(msgspec.Struct, kw_only=True, gc=False):
    """One item's state: its popularity (the ``popular`` set and the item hash),
    its popular and trending scores per category, and its related items.

    ``similar_at`` is the event time its similar items were last served: they
    are re-ranked at most every ``SIMILAR_EVERY_S`` of event time (ranking the
    blended relations costs more than applying a signal, and a popular item
    gets signals from every batch), always when the item has none served yet.
    Event time, not the wall clock: a replay serves the same lists.
    """

    popularity: ItemState | None = None
    trend: ItemTrend | None = None
    relations: ItemRelations | None = None
    similar_at: float = -math.inf
    similar_due: bool = False  # relations changed since ``similar_at``


SIMILAR_EVERY_S = 60.0


class ItemUpdate(msgspec.Struct, gc=False):
    """What one batch changed of an item, for the sink."""

    sku: str
    popularity: ItemState | None
    trend: ItemTrend | None
    similar: list[Similar] | None  # None: unchanged


class ItemLogic(StatefulBatchLogic[list[ItemSignal | PairSignal], ItemUpdate, ItemRecord]):
    """One item's popularity and relations; its signals (grouped per batch
    upstream) are applied one by one, in order (scores are floats: the same
    additions in the same order give the same bits after a crash), and
    answered with what changed."""

    def __init__(self, snapshot: ItemRecord | ItemState | None) -> None:
        if isinstance(snapshot, ItemState):  # a snapshot from before the recommender
            snapshot = ItemRecord(popularity=snapshot)
        self._record = snapshot or ItemRecord()

    def on_batch(
        self, values: list[list[ItemSignal | PairSignal]]
    ) -> tuple[Iterable[ItemUpdate], bool]:
        record = self._record
        latest = -math.inf
        signalled = False
        for signals in values:
            for signal in signals:
                if isinstance(signal, ItemSignal):
                    record.popularity = apply_signal(record.popularity, signal)
                    record.trend = apply_trend(record.trend, signal)
                    signalled = True
                else:
                    record.relations = apply_pair(record.relations, signal)
                    record.similar_due = True
                latest = max(latest, signal.ts)
        similar = None
        relations = record.relations
        if (
            record.similar_due
            and relations is not None
            and (latest - record.similar_at >= SIMILAR_EVERY_S or record.similar_at == -math.inf)
        ):
            similar = similar_items(relations)
            record.similar_at, record.similar_due = latest, False
        if not signalled and similar is None:
            return [], StatefulBatchLogic.RETAIN
        sku = (record.popularity or record.trend or record.relations).sku  # type: ignore[union-attr]
        update = ItemUpdate(
            sku,
            record.popularity if signalled else None,
            record.trend if signalled else None,
            similar,
        )
        return [update], StatefulBatchLogic.RETAIN

    def snapshot(self) -> ItemRecord:
        return self._record


class _ItemPartition(StatelessSinkPartition[tuple[str, ItemUpdate]]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys
        self._written: dict[str, tuple[str | None, str | None, float | None]] = {}
        self._trims = 0

    def write_batch(self, items: list[tuple[str, ItemUpdate]]) -> None:
        latest: dict[str, ItemUpdate] = {}
        for sku, update in items:  # an item's updates of several batches: the last of each
            mine = latest.get(sku)
            if mine is None:
                latest[sku] = ItemUpdate(sku, update.popularity, update.trend, update.similar)
                continue
            if update.popularity is not None:
                mine.popularity, mine.trend = update.popularity, update.trend
            if update.similar is not None:
                mine.similar = update.similar
        keys = self._keys
        commands: list[Command] = []
        popular: list[Any] = []
        ranked: dict[str, list[Any]] = {}
        for sku, update in latest.items():
            item, trend = update.popularity, update.trend
            if update.similar is not None:
                commands.append(("SET", keys.similar(sku), encode_similar(update.similar)))
            if item is None:
                continue
            popular += (item.log_score, sku)
            if trend is not None:
                for name in list_names(trend.category):
                    score = trend.trending if name.startswith(TRENDING) else trend.popular
                    ranked.setdefault(name, []).extend((score, sku))
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
            commands.append(("HSET", keys.item(sku), *fields))
        if popular:
            commands.append(("ZADD", keys.popular(), *popular))
        for name, members in ranked.items():
            commands.append(("ZADD", keys.ranking(name), *members))
        self._trims += 1
        if self._trims % TRIM_EVERY == 0:
            # Lists are read from the top: keep them bounded, now and then (a
            # trim per write would double the commands).
            for name in ranked:
                commands.append(("ZREMRANGEBYRANK", keys.ranking(name), 0, -RANKING_KEPT - 1))
        if commands:
            write_all(self._client, commands)

    def close(self) -> None:
        self._client.close()


RANKING_KEPT = DEFAULT_CONFIG.board_kept
TRIM_EVERY = 50  # batches


class RedisItemSink(DynamicSink[tuple[str, ItemUpdate]]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._keys = keys

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ItemPartition:
        return _ItemPartition(self._url, self._keys)
