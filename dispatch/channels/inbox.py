"""In-app messages: a per-customer inbox in Redis, read by the site through
``GET /v1/customers/{id}/inbox``.

Each message is one member of a sorted set scored by the time its rule fired.
The member is the message's JSON, made only of the trigger's own fields, so
delivering the same trigger again adds the same member: ``ZADD NX`` makes the
inbox idempotent by construction. The inbox keeps the newest ``MAX_MESSAGES``
and expires ``TTL_S`` after its last message; an erasure deletes it.
"""

from __future__ import annotations

import orjson
import redis

from dispatch.channels.base import Message, Outcome
from pulse.keys import RedisKeys

MAX_MESSAGES = 100
TTL_S = 30 * 86400


def inbox_entry(message: Message) -> bytes:
    return orjson.dumps(
        {
            "trigger_id": message.idempotency_key,
            "rule_id": message.rule_id,
            "template": message.template,
            "payload": message.payload,
            "fired_at": message.fired_at,
        },
        option=orjson.OPT_SORT_KEYS,
    )


class InboxChannel:
    name = "in_app"

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    def send(self, message: Message) -> Outcome:
        key = self._keys.inbox(message.customer_id)
        pipe = self._client.pipeline(transaction=True)
        pipe.zadd(key, {inbox_entry(message): message.fired_at}, nx=True)
        pipe.zremrangebyrank(key, 0, -(MAX_MESSAGES + 1))
        pipe.expire(key, TTL_S)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            return Outcome("retry", f"in_app: Redis: {exc}")
        return Outcome("sent", "in_app: in the inbox")

    def close(self) -> None:
        pass  # the Redis client is the dispatcher's
