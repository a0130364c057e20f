"""Items: the per-item state step, and its Redis writes.

Per item: its details (the item hash), its popular and trending scores overall and in its
category (``rank:*`` sorted sets, engine/recs/trending.py) and its similar
items (one MessagePack value, engine/recs/relations.py). Every value written
is absolute, so a replay after a crash overwrites rather than adds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from datetime import UTC, datetime
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
    """One item's state: its details and popularity (``ItemState``, for the item
    hash), its popular and trending scores per category, and its related items.

    ``similar_due``: the relations changed since its similar items were last
    served (see ItemLogic).
    """

    popularity: ItemState | None = None
    trend: ItemTrend | None = None
    relations: ItemRelations | None = None
    similar_due: bool = False


# An item's similar items are re-ranked at most this often (wall clock).
# Ranking the blended relations costs more than applying a signal, and a
# popular item gets signals in every batch: at one second, ranking was 8 % of
# a process's time when catching up (py-spy, 200,000 events); similar items
# move slowly, and five seconds behind is still fresh for a product page.
RANK_EVERY_S = 5.0
# Each item's next ranking comes after RANK_EVERY_S times a factor drawn in
# [0.75, 1.25): without it, items ranked in one batch stay in step (a busy
# item re-ranks in the first batch after its interval, all of them in the
# same one) and every fifth second one batch ranked them all, a pause that
# showed in the event-to-trigger p99. The schedule is the wall clock's
# anyway; what is served does not depend on it (see ItemLogic).
_jitter = random.Random()


class ItemUpdate(msgspec.Struct, gc=False):
    """What one batch changed of an item, for the sink."""

    sku: str
    popularity: ItemState | None
    trend: ItemTrend | None
    similar: list[Similar] | None  # None: unchanged


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(ItemRecord)


class ItemLogic(StatefulBatchLogic[list[ItemSignal | PairSignal], ItemUpdate, bytes]):
    """One item's popularity and relations; its signals (grouped per batch
    upstream) are applied one by one, in order (scores are floats: the same
    additions in the same order give the same bits after a crash), and
    answered with what changed.

    Similar items are served about every ``RANK_EVERY_S`` (3.75 to 6.25 s,
    drawn per ranking so items drift out of step); relations that
    changed meanwhile are ranked when Bytewax wakes the item, so the list
    served always ends as the one the final relations give, however the
    stream was cut into batches (a crash and a replay, or another number of
    workers, cut it elsewhere).
    """

    def __init__(
        self, snapshot: bytes | ItemRecord | ItemState | None, recovery: bool = True
    ) -> None:
        self._recovery = recovery
        if isinstance(snapshot, bytes):
            snapshot = _record_decoder.decode(snapshot)
        elif isinstance(snapshot, ItemState):  # a snapshot from before the recommender
            snapshot = ItemRecord(popularity=snapshot)
        # (An ItemRecord itself: a snapshot from before they were MessagePack.)
        self._record = snapshot or ItemRecord()
        self._next_rank = 0.0  # wall clock: ranked again from then on

    def on_batch(
        self, values: list[list[ItemSignal | PairSignal]]
    ) -> tuple[Iterable[ItemUpdate], bool]:
        record = self._record
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
        similar = None
        if record.similar_due and time.time() >= self._next_rank:
            similar = self._rank()
        if not signalled and similar is None:
            return [], StatefulBatchLogic.RETAIN
        update = ItemUpdate(
            self._sku(),
            record.popularity if signalled else None,
            record.trend if signalled else None,
            similar,
        )
        return [update], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self._record.similar_due:
            return None
        return datetime.fromtimestamp(self._next_rank, tz=UTC)

    def on_notify(self) -> tuple[Iterable[ItemUpdate], bool]:
        if not self._record.similar_due:
            return [], StatefulBatchLogic.RETAIN
        return [ItemUpdate(self._sku(), None, None, self._rank())], StatefulBatchLogic.RETAIN

    def _rank(self) -> list[Similar]:
        record = self._record
        assert record.relations is not None  # due only once a pair came
        record.similar_due = False
        self._next_rank = time.time() + RANK_EVERY_S * (0.75 + 0.5 * _jitter.random())
        return similar_items(record.relations)

    def _sku(self) -> str:
        record = self._record
        known = record.popularity or record.trend or record.relations
        assert known is not None  # a key exists once a signal came
        return known.sku

    def snapshot(self) -> bytes:
        # Bytewax asks at every epoch's end even when it keeps nothing.
        if not self._recovery:
            return b""
        # MessagePack bytes, which Bytewax stores as they are: it pickled the
        # record itself before, at about 200 us an item (a popular item's
        # relations are a few hundred floats), four times msgspec's cost, all
        # of it in the stall at the end of each epoch that sets the p99 latency.
        return _record_encoder.encode(self._record)


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
        ranked: dict[str, list[Any]] = {}
        for sku, update in latest.items():
            item, trend = update.popularity, update.trend
            if update.similar is not None:
                commands.append(("SET", keys.similar(sku), encode_similar(update.similar)))
            if item is None:
                continue
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
            if item.category:
                commands.append(("HSET", keys.item_categories(), sku, item.category))
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
