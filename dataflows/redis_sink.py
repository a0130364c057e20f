"""Writes customer serving views to Redis: absolute values, pipelined per batch."""

from __future__ import annotations

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from engine.customer import ProfileRemoved, SegmentsChanged
from engine.profile import CustomerState, encode_view, profile_view
from pulse.keys import RedisKeys

ProfileWrite = CustomerState | ProfileRemoved | SegmentsChanged


class _ProfilePartition(StatelessSinkPartition[ProfileWrite]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys

    def write_batch(self, items: list[ProfileWrite]) -> None:
        # One write per customer per batch: the last state wins, and since the
        # view is absolute, rewriting it after a replay cannot double count.
        latest: dict[str, CustomerState | None] = {}
        pipe = self._client.pipeline(transaction=False)
        for item in items:
            if isinstance(item, ProfileRemoved):
                latest[item.customer_key] = None
            elif isinstance(item, SegmentsChanged):
                # Membership is absolute (add/remove), so a replay cannot double count.
                for name in item.added:
                    pipe.sadd(self._keys.segment(name), item.customer_key)
                for name in item.removed:
                    pipe.srem(self._keys.segment(name), item.customer_key)
            else:
                latest[item.customer_id] = item
        for customer_id, state in latest.items():
            key = self._keys.profile(customer_id)
            if state is None:
                pipe.delete(key, self._keys.inbox(customer_id))
            else:
                # One field holding the whole view: a single argument to pack
                # and send instead of one per attribute (measured in
                # benchmarks/profiles.py), and read back with one HGET.
                pipe.hset(key, "view", encode_view(profile_view(state)))
        pipe.execute()

    def close(self) -> None:
        self._client.close()


class RedisProfileSink(DynamicSink[ProfileWrite]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._keys = keys

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProfilePartition:
        return _ProfilePartition(self._url, self._keys)
