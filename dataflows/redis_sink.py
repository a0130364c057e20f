"""Writes customer serving views to Redis: absolute values, pipelined per batch."""

from __future__ import annotations

from typing import Protocol

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.redis_batch import Command, write_all
from engine.customer import SegmentsChanged
from pulse.keys import RedisKeys


class ProfileWrites(Protocol):
    """What a batch changed in serving views (dataflows/batches.py: Outputs)."""

    views: dict[str, bytes | None]  # customer key -> encoded view, None: removed
    items: dict[str, bytes]  # customer key -> the recommender's items, encoded
    features: dict[str, bytes]  # customer key -> the score models' features, encoded
    emails: dict[str, str]  # customer key -> e-mail digest to index it under
    unindex: set[str]  # customer keys erased: out of the e-mail index
    segments: list[SegmentsChanged]


class _ProfilePartition(StatelessSinkPartition[ProfileWrites]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys

    def write_batch(self, items: list[ProfileWrites]) -> None:
        # One write per customer per batch: the last view wins, and since it is
        # absolute, rewriting it after a replay cannot double count.
        latest: dict[str, bytes | None] = {}
        shopper: dict[str, bytes] = {}
        scored: dict[str, bytes] = {}
        emails: dict[str, str] = {}
        unindex: set[str] = set()
        commands: list[Command] = []
        keys = self._keys
        for item in items:
            latest.update(item.views)
            shopper.update(item.items)
            scored.update(item.features)
            for key in item.unindex:
                unindex.add(key)
                emails.pop(key, None)
            emails.update(item.emails)
            for change in item.segments:
                # Membership is absolute (add/remove), so a replay cannot double count.
                for name in change.added:
                    commands.append(("SADD", keys.segment(name), change.customer_key))
                for name in change.removed:
                    commands.append(("SREM", keys.segment(name), change.customer_key))
        profile = keys.profile
        unindex.update(key for key, view in latest.items() if view is None)
        if unindex:
            commands += self._unindexed(unindex)
        for customer_id, digest in emails.items():
            if latest.get(customer_id, b"") is not None:  # not removed in this batch
                commands.append(("SADD", keys.email(digest), customer_id))
                commands.append(("SADD", keys.emails(customer_id), digest))
        for customer_id, view in latest.items():
            if view is None:
                commands.append(("DEL", profile(customer_id), keys.inbox(customer_id)))
            else:
                # One field holding the whole view: a single argument to pack
                # and send instead of one per attribute (measured in
                # benchmarks/profiles.py), and read back with one HGET.
                fields: list[bytes | str] = ["view", view]
                mine = shopper.get(customer_id)
                if mine is not None:
                    fields += ("items", mine)
                x = scored.get(customer_id)
                if x is not None:
                    fields += ("x", x)
                commands.append(("HSET", profile(customer_id), *fields))
        write_all(self._client, commands)

    def _unindexed(self, customers: set[str]) -> list[Command]:
        """Erased or removed customers out of the e-mail index: which digests
        each was indexed under is read first (a round trip, only in batches
        that remove a profile)."""
        keys = self._keys
        ordered = sorted(customers)
        pipe = self._client.pipeline(transaction=False)
        for customer_id in ordered:
            pipe.smembers(keys.emails(customer_id))
        commands: list[Command] = []
        for customer_id, digests in zip(ordered, pipe.execute(), strict=True):
            for raw in sorted(digests):
                digest = raw.decode() if isinstance(raw, bytes) else str(raw)
                commands.append(("SREM", keys.email(digest), customer_id))
            commands.append(("DEL", keys.emails(customer_id)))
        return commands

    def close(self) -> None:
        self._client.close()


class RedisProfileSink(DynamicSink[ProfileWrites]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._keys = keys

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProfilePartition:
        return _ProfilePartition(self._url, self._keys)
